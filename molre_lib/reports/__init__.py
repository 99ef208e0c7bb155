"""From radiology report text to the 75 finding labels: phrase file, sections, the rule-based labeller, agreement.

Data-level (below engine): imports only ``common`` and ``data``.
"""
