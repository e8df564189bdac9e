"""One module per page's data: review, worklist, patient, the executive views and charts.
Pages call one function of their view and render what it returns."""
