"""One module per page's data: review, worklist, patient, trends, compare,
payment_models, equity, econsults; shared readers (cells_read, executive_settings, scope), format and charts.
Pages call one function of their view and render what it returns."""
