"""What the product computes after each import: subgroups with reasons, risk scores, measure
flags per patient, costs and activity per patient-month, and the additive cells. ``pipeline``
runs the steps in order; ``blocks`` is the one place that splits patients into blocks and
runs them on worker processes."""
