"""The Knative Pod Autoscaler, as a pure state machine fed metric samples and the clock.

``Kpa`` is the decider (knative/serving ``pkg/autoscaler/scaling/autoscaler.go``): stable and panic window
averages, desired counts clamped by the scale-up and scale-down rates, panic mode, and the scale-down delay.
``PodAutoscaler`` is what the PodAutoscaler reconciler adds afterwards (``pkg/reconciler/autoscaling/kpa``):
min/max/initial scale, and scaling to zero only after the grace period. Neither does I/O or reads the clock, so
tests drive them with synthetic series; the serving shell calls ``record`` every second and ``decide`` every 2 s.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

from knative.local.serving.config import ScalingSettings

METRIC_TICK_S = 1.0
DECISION_TICK_S = 2.0


class WindowAverage:
    """Per-second buckets averaged over a trailing window, like Knative's ``TimedFloat64Buckets``.

    The divisor is the number of seconds since the first sample, capped at the window, so a young series is not
    diluted by seconds that were never observed. Nothing recorded for a whole window averages to 0.
    """

    def __init__(self, window_s: float) -> None:
        self.window = max(1, int(round(window_s)))
        self._buckets: dict[int, float] = {}
        self._first: int | None = None
        self._last: int | None = None

    def record(self, now: float, value: float) -> None:
        second = int(math.floor(now))
        if self._last is not None and second - self._last >= self.window:
            self._buckets.clear()
            self._first = None
        if self._first is None:
            self._first = second
        self._buckets[second] = value
        self._last = max(second, self._last if self._last is not None else second)
        oldest = self._last - self.window
        for stale in [s for s in self._buckets if s <= oldest]:
            del self._buckets[stale]

    def average(self, now: float) -> float:
        second = int(math.floor(now))
        if self._first is None or self._last is None or second - self._last >= self.window:
            return 0.0
        total = sum(v for s, v in self._buckets.items() if second - self.window < s <= second)
        seen = min(self._last - self._first + 1, self.window)
        return total / seen


class MaxOverWindow:
    """The largest value recorded in the trailing window: Knative's scale-down delay (``max_time_window.go``)."""

    def __init__(self, window_s: float) -> None:
        self.window = window_s
        self._values: deque[tuple[float, int]] = deque()

    def record(self, now: float, value: int) -> None:
        # Older values that are not larger can never be the maximum again.
        while self._values and self._values[-1][1] <= value:
            self._values.pop()
        self._values.append((now, value))

    def current(self, now: float) -> int:
        while len(self._values) > 1 and self._values[0][0] <= now - self.window:
            self._values.popleft()
        return self._values[0][1] if self._values else 0


@dataclass(frozen=True)
class Decision:
    """One KPA tick: the desired instance count and the numbers that led to it."""

    desired: int
    stable_average: float
    panic_average: float
    panicking: bool


class Kpa:
    """The decider. ``record`` once per metric tick with the revision's total concurrency (or requests/s);
    ``decide`` once per decision tick with the number of ready instances."""

    def __init__(self, settings: ScalingSettings) -> None:
        self.settings = settings
        self._stable = WindowAverage(settings.stable_window_s)
        self._panic = WindowAverage(settings.panic_window_s)
        self._delay = MaxOverWindow(settings.scale_down_delay_s) if settings.scale_down_delay_s > 0 else None
        self._panic_since: float | None = None
        self._max_panic_pods = 0

    @property
    def panicking(self) -> bool:
        return self._panic_since is not None

    def record(self, now: float, value: float) -> None:
        self._stable.record(now, value)
        self._panic.record(now, value)

    def decide(self, now: float, ready_instances: int) -> Decision:
        s = self.settings
        stable = self._stable.average(now)
        panic = self._panic.average(now)
        ready = max(1.0, float(ready_instances))

        # The lower clamp is Knative's "reachable" case: at most divide by max-scale-down-rate per tick.
        max_up = math.ceil(s.max_scale_up_rate * ready)
        max_down = math.floor(ready / s.max_scale_down_rate)
        dspc = math.ceil(stable / s.target_value)
        dppc = math.ceil(panic / s.target_value)
        if s.activation_scale > 1:
            dspc = max(dspc, s.activation_scale) if dspc > 0 else 0
            dppc = max(dppc, s.activation_scale) if dppc > 0 else 0
        stable_pods = int(min(max(dspc, max_down), max_up))
        panic_pods = int(min(max(dppc, max_down), max_up))

        over_threshold = dppc / ready >= s.panic_threshold
        if over_threshold:
            self._panic_since = now
        elif self._panic_since is not None and now - self._panic_since > s.stable_window_s:
            # The surge has had a full stable window to reach the stable average.
            self._panic_since = None
            self._max_panic_pods = 0

        desired = stable_pods
        if self._panic_since is not None:
            desired = max(desired, panic_pods)
            # Never scale down while panicking.
            self._max_panic_pods = max(self._max_panic_pods, desired)
            desired = self._max_panic_pods

        if self._delay is not None:
            self._delay.record(now, desired)
            desired = self._delay.current(now)
        return Decision(desired, stable, panic, self._panic_since is not None)


class PodAutoscaler:
    """What Knative's PodAutoscaler reconciler applies to the decider's answer: bounds, initial scale, and the
    scale-to-zero gate (a revision must have been active a stable window, then idle for the grace period or the
    pod retention period, whichever is longer, before its last instance goes)."""

    def __init__(self, settings: ScalingSettings) -> None:
        self.settings = settings
        self._initial_reached = settings.initial_scale == 0
        self._active_since: float | None = None
        self._idle_since: float | None = None

    def desired(self, now: float, wanted: int, ready_instances: int) -> int:
        s = self.settings
        if not self._initial_reached:
            if ready_instances >= s.initial_scale:
                self._initial_reached = True
            else:
                wanted = max(wanted, s.initial_scale)
        lower = s.min_scale if s.enable_scale_to_zero else max(1, s.min_scale)
        wanted = max(wanted, lower)
        if s.max_scale:
            wanted = min(wanted, s.max_scale)

        if wanted > 0:
            self._idle_since = None
            if self._active_since is None:
                self._active_since = now
            return wanted
        if self._active_since is None:
            return 0
        if now - self._active_since < s.stable_window_s:
            return 1
        if self._idle_since is None:
            self._idle_since = now
        if now - self._idle_since < max(s.scale_to_zero_grace_s, s.scale_to_zero_retention_s):
            return 1
        self._active_since = None
        self._idle_since = None
        return 0
