"""Who may see what: roles and page permissions (``policy``), the users table (``users``) and
the audit log (``audit``)."""
