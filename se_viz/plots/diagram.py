""""Add it to ResNet50": one bottleneck drawn as boxes and arrows, the SE gate marked.

The drawing follows the layout that is loaded: PaddleClas's vd shortcut (2x2 average pool,
then a 1x1 conv) or the canonical strided 1x1 conv, only in the first block of a stage;
the stride sits on the 3x3 conv (block 1 of stages 3-5).
"""

from __future__ import annotations

import plotly.graph_objects as go

from ..arch import block_channels, hidden_width, stage_of

GATE = "#d62728"
BOX = "#e8eef7"
SE_BOX = "#fde9e7"


def bottleneck_steps(arch: str, block: str, width: int = 64, reduction: float = 16
                     ) -> tuple[list[str], str]:
    """The main path of ``block`` (top to bottom) and its shortcut, as text."""
    c = block_channels(width)[block]
    h = hidden_width(c, reduction)
    planes = c // 4
    first = block.endswith("_1")
    stride = 2 if first and stage_of(block) > 2 else 1
    main = [f"1x1 conv {planes}, BN, ReLU",
            f"3x3 conv {planes}{', stride 2' if stride == 2 else ''}, BN, ReLU",
            f"1x1 conv {c}, BN",
            "SE: global average pool (squeeze)",
            f"FC {c} -> {h} (r = {reduction:g}), ReLU",
            f"FC {h} -> {c}, sigmoid = the gate s",
            "x * s (reweight each channel)"]
    if not first:
        short = "identity"
    elif arch == "se_resnet50_vd":
        short = (f"2x2 average pool, 1x1 conv {c}, BN" if stride == 2
                 else f"1x1 conv {c}, BN")
    else:
        short = f"1x1 conv {c}{', stride 2' if stride == 2 else ''}, BN"
    return main, short


def bottleneck_diagram(arch: str, block: str, width: int = 64, reduction: float = 16
                       ) -> go.Figure:
    """Boxes for the bottleneck of ``block``: the main path down the middle, the SE steps
    tinted, the gate in red, the shortcut on the right, then + and ReLU."""
    main, short = bottleneck_steps(arch, block, width, reduction)
    rows = ["input x", *main, "+ shortcut", "ReLU -> next block"]
    fig = go.Figure()
    n = len(rows)
    for i, text in enumerate(rows):
        y = n - i
        se = 4 <= i <= 7
        colour = GATE if i == 6 else ("#1f2933" if not se else "#7f1d1d")
        fill = SE_BOX if se else (BOX if 0 < i < n - 2 else "white")
        fig.add_shape(type="rect", x0=0.05, x1=0.62, y0=y - 0.38, y1=y + 0.38,
                      line=dict(color=colour, width=3 if i == 6 else 1), fillcolor=fill)
        fig.add_annotation(x=0.335, y=y, text=f"<b>{text}</b>" if i == 6 else text,
                           showarrow=False, font=dict(size=12, color=colour))
        if i < n - 1:
            fig.add_annotation(x=0.335, y=y - 0.62, ax=0.335, ay=y - 0.38, xref="x", yref="y",
                               axref="x", ayref="y", showarrow=True, arrowhead=2, text="")
    top, plus = n, 2
    fig.add_shape(type="rect", x0=0.70, x1=0.98, y0=(top + plus) / 2 - 0.45,
                  y1=(top + plus) / 2 + 0.45, line=dict(color="#1f2933"), fillcolor="white")
    fig.add_annotation(x=0.84, y=(top + plus) / 2, text=f"shortcut:<br>{short}",
                       showarrow=False, font=dict(size=11))
    fig.add_shape(type="path", path=f"M 0.62,{top} L 0.84,{top} L 0.84,{(top + plus) / 2 + 0.45}",
                  line=dict(color="#1f2933"))
    fig.add_shape(type="path", path=f"M 0.84,{(top + plus) / 2 - 0.45} L 0.84,{plus}",
                  line=dict(color="#1f2933"))
    fig.add_annotation(x=0.62, y=plus, ax=0.84, ay=plus, xref="x", yref="y",
                       axref="x", ayref="y", showarrow=True, arrowhead=2, text="")
    fig.update_xaxes(visible=False, range=[0, 1])
    fig.update_yaxes(visible=False, range=[0.4, n + 0.6])
    layout = "PaddleClas vd shortcut" if arch == "se_resnet50_vd" else "canonical shortcut"
    fig.update_layout(title=f"Where the gate sits: {block}'s bottleneck ({layout})",
                      margin=dict(l=10, r=10, t=40, b=10), plot_bgcolor="white",
                      showlegend=False)
    return fig
