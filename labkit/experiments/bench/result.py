"""What one benchmark run measured (:class:`BenchResult`), and the pipeline set beside the bare loop."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd


@dataclass
class BenchResult:
    """One benchmark run: its figures (as written to JSON) and where its files are."""

    data: dict[str, Any]
    json_path: Path | None = None
    plot_path: Path | None = None

    @property
    def rates(self) -> pd.DataFrame:
        """One row per rate: percentiles, errors and the stage medians as ``<stage>`` columns."""
        rows = [{**{k: v for k, v in p.items() if not isinstance(v, dict)}, **p["stages_median_ms"]}
                for p in self.data["rates"]]
        table = pd.DataFrame(rows).set_index("rate_per_s")
        # A bound the sample could not give is null in the JSON: unbounded, so -inf or +inf here.
        for column in table.columns:
            if column.endswith(("_low_ms", "_high_ms")):
                table[column] = pd.to_numeric(table[column]).fillna(
                    float("inf") if column.endswith("_high_ms") else float("-inf"))
        return table


def ratios(data: dict[str, Any]) -> dict[str, Any]:
    """Pipeline over bare: saturation throughput, and each rate's p50 over the bare ms per image."""
    bare = data["bare"]
    return {"saturation_over_bare_throughput": _ratio(data["saturation"]["throughput_img_s"],
                                                      bare["throughput_img_s"]),
            "p50_over_bare_ms": {f"{p['rate_per_s']:g}": _ratio(p["p50_ms"], bare["ms_per_image_median"])
                                 for p in data["rates"]}}


def _ratio(numerator: float | None, denominator: float) -> float | None:
    return round(numerator / denominator, 3) if numerator is not None and denominator else None


def ratio_table(result: BenchResult) -> pd.DataFrame:
    """The pipeline beside the bare loop: throughput, and each rate's p50 against ms per image."""
    data, bare = result.data, result.data["bare"]
    rows = [{"metric": "throughput (img/s): saturation vs bare", "pipeline": data["saturation"]["throughput_img_s"],
             "bare": bare["throughput_img_s"], "ratio": data["ratios"]["saturation_over_bare_throughput"]}]
    for point in data["rates"]:
        rows.append({"metric": f"p50 (ms) at {point['rate_per_s']:g} img/s vs bare ms/image",
                     "pipeline": point["p50_ms"], "bare": bare["ms_per_image_median"],
                     "ratio": data["ratios"]["p50_over_bare_ms"][f"{point['rate_per_s']:g}"]})
    return pd.DataFrame(rows).set_index("metric")
