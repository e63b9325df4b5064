"""A control panel for the lab in Jupyter: service lights, fault controls, load buttons and a
live latency chart. Without a frontend (papermill, a plain script) it is a text status table.

Example:
    >>> control_panel(lab)                                          # doctest: +SKIP
    >>> control_panel(lab, load_start=gen.start, load_stop=gen.stop)  # doctest: +SKIP
"""

from __future__ import annotations

import functools
import html
import io
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import ipywidgets as w
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from labkit.errors import LabError
from labkit.experiments.faults import KINDS, Fault, FaultInjector, Param, kind_of, label
from labkit.pipeline.metrics import load_metrics
from labkit.pipeline.upload import metrics_path
from labkit.stack.lab import Lab
from labkit.stack.services import SERVICE_NAMES

COLOURS = {"up": "#2e7d32", "paused": "#f9a825", "down": "#c62828", "unhealthy": "#c62828", "remote": "#1565c0"}
CHART_POINTS = 300  # the newest images the chart shows


def control_panel(lab: Lab, load_start: Callable[[], None] | None = None,
                  load_stop: Callable[[], None] | None = None, text: bool | None = None,
                  refresh_s: float = 2.0, chart_s: float = 5.0) -> ControlPanel | TextPanel:
    """The lab's control panel.

    Args:
        lab: The running lab.
        load_start: Starts the load generator; its button is hidden when None.
        load_stop: Stops the load generator; its button is hidden when None.
        text: True for the text version, False for widgets; None decides: text when no
            frontend can show widgets (papermill, a script, a kernel not run by a Jupyter server).
        refresh_s: How often the status lights and the fault list are refreshed.
        chart_s: How often the latency chart is redrawn (when the metrics file changed).

    Returns:
        A widget (close it to stop its refresh thread), or a :class:`TextPanel`.
    """
    if text is None:
        text = headless()
    if text:
        return TextPanel(lab)
    return ControlPanel(lab, load_start, load_stop, refresh_s, chart_s)


def headless() -> bool:
    """Whether no frontend can show widgets. A Jupyter server (JupyterLab, Notebook) names its
    kernels' sessions in ``JPY_SESSION_NAME``; papermill and plain kernels do not."""
    try:
        from IPython import get_ipython

        kernel = getattr(get_ipython(), "kernel", None)
    except ImportError:
        kernel = None
    return kernel is None or "PAPERMILL_INPUT_PATH" in os.environ or "JPY_SESSION_NAME" not in os.environ


def status_table(lab: Lab) -> pd.DataFrame:
    """One row per service: ``state`` (up, down, paused, unhealthy) and ``healthy``."""
    rows = [{"service": s.name, "state": s.state, "healthy": s.healthy} for s in lab.backend.status()]
    return pd.DataFrame(rows).set_index("service")


def fault_lines(faults: list[Fault]) -> list[str]:
    """The faults in force as short lines, e.g. ``latency@nodered-faas latency_ms=500``."""
    return [" ".join([label(f), *(f"{k}={v}" for k, v in f.params.items())]) for f in faults]


class TextPanel:
    """The control panel without a frontend: the status table and the faults in force, as text."""

    def __init__(self, lab: Lab):
        self.lab = lab
        self.injector = FaultInjector(lab)

    def text(self) -> str:
        active = fault_lines(self.injector.active())
        return (f"{status_table(self.lab).to_string()}\n\n"
                f"active faults: {', '.join(active) if active else 'none'}")

    def __repr__(self) -> str:
        return self.text()

    def close(self) -> None:
        """Nothing runs in the background; here so both panels can be closed alike."""


class ControlPanel(w.VBox):
    """The widget version; see :func:`control_panel`. ``close()`` stops its refresh thread."""

    def __init__(self, lab: Lab, load_start: Callable[[], None] | None, load_stop: Callable[[], None] | None,
                 refresh_s: float, chart_s: float):
        self.lab, self.injector = lab, FaultInjector(lab)
        self.refresh_s, self.chart_s = refresh_s, chart_s
        self._stop = threading.Event()
        self._timers: dict[tuple[str, str], threading.Timer] = {}
        self._work = ThreadPoolExecutor(max_workers=1, thread_name_prefix="labkit-panel")
        self._chart_mark: tuple[float, int] | None = None
        super().__init__(children=[
            w.HTML("<b>labkit control panel</b>"), self._lights_row(), self._fault_controls(),
            self._load_row(load_start, load_stop), self._chart_box()])
        self.add_class("labkit-panel")
        self._on_kind()
        self.refresh()
        self.redraw_chart()
        self._thread = threading.Thread(target=self._loop, name="labkit-panel-refresh", daemon=True)
        self._thread.start()

    # -- building --------------------------------------------------------------
    def _lights_row(self) -> w.HBox:
        self.lights = {name: w.HTML(_light(name, "down")) for name in SERVICE_NAMES}
        for name, light in self.lights.items():
            light.add_class(f"labkit-light-{name}")
        return w.HBox(list(self.lights.values()), layout=w.Layout(flex_flow="row wrap", gap="12px"))

    def _fault_controls(self) -> w.VBox:
        self.kind = w.Dropdown(options=tuple(KINDS), value="latency", description="fault")
        self.target = w.Dropdown(options=kind_of("latency").targets(), description="target")
        self.duration = w.IntSlider(30, min=0, max=300, step=5, description="duration s",
                                    tooltip="0: until cleared")
        self.sliders = {p.name: _slider(p) for p in _panel_params()}
        for name in ("kind", "target", "duration"):
            getattr(self, name).add_class(f"labkit-{name}")
        self.kind.observe(lambda _: self._on_kind(), names="value")
        buttons = [self._button("inject", "danger", self._on_inject), self._button("clear", "success", self._on_clear),
                   self._button("clear all", "", self._on_clear_all)]
        self.active_list = w.HTML(_active_html([]))
        self.active_list.add_class("labkit-active")
        self.message = w.HTML("")
        self.message.add_class("labkit-message")
        return w.VBox([w.HBox([self.kind, self.target]), self.duration, *self.sliders.values(),
                       w.HBox(buttons), self.active_list, self.message])

    def _button(self, text: str, style: str, handler: Callable[[], None]) -> w.Button:
        button = w.Button(description=text, button_style=style)
        button.add_class(f"labkit-{text.replace(' ', '-')}")
        button.on_click(lambda _: handler())
        return button

    def _load_row(self, load_start: Callable[[], None] | None, load_stop: Callable[[], None] | None) -> w.HBox:
        buttons = [self._button(text, "info", functools.partial(self._run, text, fn))
                   for text, fn in (("start load", load_start), ("stop load", load_stop)) if fn is not None]
        return w.HBox(buttons, layout=w.Layout(display="" if buttons else "none"))

    def _chart_box(self) -> w.Image:
        self.chart = w.Image(format="png", layout=w.Layout(max_width="640px"))
        self.chart.add_class("labkit-chart")
        return self.chart

    # -- fault controls --------------------------------------------------------
    def _on_kind(self) -> None:
        """Offer the chosen kind's targets, and a slider for each of its parameters."""
        kind = kind_of(self.kind.value)
        if tuple(self.target.options) != kind.targets():
            self.target.options = kind.targets()
        for name, slider in self.sliders.items():
            slider.layout.display = "" if name in kind.accepted() else "none"

    def fault(self) -> Fault:
        """The fault the controls describe."""
        kind = kind_of(self.kind.value)
        params = {name: slider.value for name, slider in self.sliders.items() if name in kind.accepted()}
        return Fault(kind.name, self.target.value, duration_s=self.duration.value, params=params)

    def _on_inject(self) -> None:
        fault = self.fault()
        self._run(f"inject {label(fault)}", lambda: self._inject(fault))

    def _inject(self, fault: Fault) -> None:
        self.injector.inject(fault)
        if fault.duration_s > 0:  # cleared by itself after its duration
            timer = threading.Timer(fault.duration_s, self._run, (f"clear {label(fault)}", lambda: self._clear(fault)))
            timer.daemon = True
            self._timers[(fault.kind, fault.target)] = timer
            timer.start()

    def _on_clear(self) -> None:
        fault = self.fault()
        self._run(f"clear {label(fault)}", lambda: self._clear(fault))

    def _clear(self, fault: Fault) -> None:
        timer = self._timers.pop((fault.kind, fault.target), None)
        if timer is not None:
            timer.cancel()
        self.injector.clear(fault)

    def _on_clear_all(self) -> None:
        def clear_all() -> None:
            for timer in self._timers.values():
                timer.cancel()
            self._timers.clear()
            self.injector.clear_all()

        self._run("clear all", clear_all)

    def _run(self, what: str, action: Callable[[], None]) -> None:
        """Do ``action`` in the panel's worker thread: starting a service takes seconds, and the
        kernel must stay responsive meanwhile."""
        self._say(f"{what} ...")

        def job() -> None:
            started = time.monotonic()
            try:
                action()
                self._say(f"{what}: done in {time.monotonic() - started:.1f} s")
            except LabError as e:
                self._say(f"{what}: failed: {e}", error=True)
            self.refresh()

        self._work.submit(job)

    def _say(self, message: str, error: bool = False) -> None:
        colour = COLOURS["down"] if error else "#555"
        self.message.value = f'<span style="color:{colour}">{html.escape(message)}</span>'

    # -- refreshing ------------------------------------------------------------
    def refresh(self) -> None:
        """Update the status lights and the list of faults in force."""
        for status in self.lab.backend.status():
            if status.name in self.lights:
                self.lights[status.name].value = _light(status.name, status.state)
        self.active_list.value = _active_html(self.injector.active())

    def redraw_chart(self) -> None:
        """Redraw the latency chart when the metrics file has changed."""
        path = metrics_path(self.lab)
        mark = (path.stat().st_mtime, path.stat().st_size) if path.exists() else (0.0, 0)
        if mark == self._chart_mark:
            return
        self._chart_mark = mark
        self.chart.value = latency_png(load_metrics(path), self.lab.ctx.config.sla_threshold_s)

    def _loop(self) -> None:
        last_chart = time.monotonic()
        while not self._stop.wait(self.refresh_s):
            try:
                self.refresh()
                if time.monotonic() - last_chart >= self.chart_s:
                    last_chart = time.monotonic()
                    self.redraw_chart()
            except Exception as e:  # noqa: BLE001 - a failed refresh must not end the panel
                self._say(f"refresh failed: {e}", error=True)

    def close(self) -> None:
        """Stop the refresh thread and the timers, then close the widgets."""
        self._stop.set()
        for timer in self._timers.values():
            timer.cancel()
        self._work.shutdown(wait=False)
        for child in _descendants(self):
            child.close()
        super().close()


def latency_png(frame: pd.DataFrame, sla_s: float, width_in: float = 6.4, height_in: float = 2.6) -> bytes:
    """End-to-end seconds of the newest images, with the SLA line, as a PNG."""
    fig = Figure(figsize=(width_in, height_in), dpi=90, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    done = frame.dropna(subset=["duration_s", "t_upload_start"]).sort_values("t_upload_start").tail(CHART_POINTS)
    if len(done):
        when = pd.to_datetime(done["t_upload_start"], unit="ms")
        ax.plot(when, done["duration_s"], "o", ms=3, color="tab:blue", label="one image")
        ax.set_xlabel("upload start (UTC)")
        fig.autofmt_xdate()
    else:
        ax.text(0.5, 0.5, "no images yet", ha="center", va="center", transform=ax.transAxes, color="grey")
        ax.set_xticks([])
    ax.axhline(sla_s, color="tab:red", ls="--", lw=1, label=f"SLA {sla_s:g} s")
    top = max(sla_s * 1.2, float(done["duration_s"].max()) * 1.1 if len(done) else 0.0)
    ax.set(ylabel="end-to-end seconds", ylim=(0, top))
    ax.legend(loc="upper left", fontsize="small")
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def _panel_params() -> list[Param]:
    """The parameters the panel has sliders for: every kind's that has a slider range, one per name."""
    found: dict[str, Param] = {}
    for kind in KINDS.values():
        for param in kind.params:
            if param.most is not None:
                found.setdefault(param.name, param)  # kinds that share a name share its slider
    return list(found.values())


def _slider(param: Param) -> w.IntSlider:
    """A slider for ``param``, e.g. ``latency ms`` classed ``labkit-latency`` (its name without the unit)."""
    slider = w.IntSlider(round(param.default), min=round(param.least), max=round(param.most), step=round(param.step),
                         description=param.name.replace("_", " "))
    slider.add_class(f"labkit-{param.name.rsplit('_', 1)[0]}")
    return slider


def _light(name: str, state: str) -> str:
    colour = COLOURS.get(state, "#757575")
    return (f'<span class="labkit-light" data-service="{name}" data-state="{state}" title="{state}" '
            f'style="color:{colour};font-size:1.4em;vertical-align:middle">&#9679;</span> {name} '
            f'<small style="color:#666">{state}</small>')


def _active_html(faults: list[Fault]) -> str:
    lines = fault_lines(faults)
    items = "".join(f"<li>{html.escape(line)}</li>" for line in lines) or "<li><i>none</i></li>"
    return f'<div>active faults:</div><ul class="labkit-active-faults">{items}</ul>'


def _descendants(box: w.Box) -> list[w.Widget]:
    found = []
    for child in box.children:
        found.append(child)
        if isinstance(child, w.Box):
            found.extend(_descendants(child))
    return found
