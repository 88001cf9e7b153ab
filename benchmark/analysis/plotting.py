"""Plot helpers shared by the leaderboard and the study reports (matplotlib, Agg backend)."""

from __future__ import annotations

from . import stats


LINESTYLES = ("-", "--", ":", "-.")


def line_styles(n: int) -> list:
    """n distinguishable line styles: tab20's ten dark colours solid, then its ten light ones
    dashed (so up to 20 series never share a colour, and a light shade never shares its dark
    twin's line), then the same twenty dotted and dash-dotted."""
    import matplotlib

    colors = matplotlib.colormaps["tab20"].colors
    order = list(range(0, 20, 2)) + list(range(1, 20, 2))
    return [{"color": colors[order[i % 20]], "linestyle": LINESTYLES[(i // 10) % len(LINESTYLES)]}
            for i in range(n)]


def loss_band(ax, curves: list, label: str, band_alpha: float = 0.2, **style) -> None:
    """Mean training-loss curve over seeds with a +-1 std band; `curves` are [[step, loss], ...]."""
    curves = [c for c in curves if c]
    if not curves:
        return
    n = min(len(c) for c in curves)
    steps = [curves[0][i][0] for i in range(n)]
    per_step = [[c[i][1] for c in curves] for i in range(n)]
    mean = [stats.mean(v) for v in per_step]
    band = [stats.std(v) for v in per_step]
    line, = ax.plot(steps, mean, label=label, **style)
    ax.fill_between(steps, [m - b for m, b in zip(mean, band)], [m + b for m, b in zip(mean, band)],
                    color=line.get_color(), alpha=band_alpha)
    ax.set_xlabel("step")
    ax.set_ylabel("train loss (mean of 100 steps)")
