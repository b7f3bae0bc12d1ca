""""Where the gate sits": one attention block drawn as boxes and arrows, the gate marked.

Drawn from the network's own description of the block (`se_viz.blocks.AttentionBlock`):
its module paths, channels C, hidden width h and how it was derived, inner activation and
gate function; an ECA block shows its 1-D convolution across channels instead of the
bottleneck.
"""

from __future__ import annotations

import plotly.graph_objects as go

from ..blocks import AttentionBlock

GATE = "#d62728"
BOX = "#e8eef7"
SE_BOX = "#fde9e7"


def attention_steps(block: AttentionBlock) -> list[str]:
    """The attention block's steps, top to bottom, as text (the gate's step included)."""
    c, h = block.channels, block.hidden
    rule = f" ({block.width_rule})" if block.width_rule else ""
    if block.reducible:
        middle = [f"FC {c} -> {h}{rule}, {block.act}", f"FC {h} -> {c}, {block.gate.label}"
                  " = the gate s"]
    else:
        middle = [f"1-D conv across the {c} channels{rule}, no bottleneck",
                  f"{block.gate.label} = the gate s"]
    return ["global average pool (squeeze)", *middle, "x * s (reweight each channel)"]


def bottleneck_diagram(block: AttentionBlock) -> go.Figure:
    """Boxes for ``block``: the features x from the convolutions of its network block, the
    attention steps tinted, the gate in red, then back into the network block."""
    steps = attention_steps(block)
    rows = [f"x: {block.channels} channels from {block.block_path}", *steps,
            f"on through {block.block_path}"]
    gate_row = 3  # x, squeeze, the first layer, then the gate
    fig = go.Figure()
    n = len(rows)
    for i, text in enumerate(rows):
        y = n - i
        att = 1 <= i <= len(steps)
        colour = GATE if i == gate_row else ("#7f1d1d" if att else "#1f2933")
        fill = SE_BOX if att else BOX
        fig.add_shape(type="rect", x0=0.05, x1=0.95, y0=y - 0.38, y1=y + 0.38,
                      line=dict(color=colour, width=3 if i == gate_row else 1), fillcolor=fill)
        fig.add_annotation(x=0.5, y=y, text=f"<b>{text}</b>" if i == gate_row else text,
                           showarrow=False, font=dict(size=12, color=colour))
        if i < n - 1:
            fig.add_annotation(x=0.5, y=y - 0.62, ax=0.5, ay=y - 0.38, xref="x", yref="y",
                               axref="x", ayref="y", showarrow=True, arrowhead=2, text="")
    fig.update_xaxes(visible=False, range=[0, 1])
    fig.update_yaxes(visible=False, range=[0.4, n + 0.6])
    fig.update_layout(title=f"Where the gate sits: {block.name} ({block.path}, "
                            f"{block.stage_label})",
                      margin=dict(l=10, r=10, t=40, b=10), plot_bgcolor="white",
                      showlegend=False)
    return fig
