"""One module per page's data: review (+ review_log), worklist, patient, trends, compare,
payment_models, equity, econsults, admin_rules; shared: cells_read, executive_settings, scope,
format (the one money and number formatter) and charts.
Pages call one function of their view and render what it returns."""
