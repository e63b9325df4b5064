"""The analysis layer: SLA verdicts with their statistics, and the exported run reports."""
