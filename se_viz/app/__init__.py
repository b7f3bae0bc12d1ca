"""The Streamlit app: the only package in se_viz that imports streamlit.

    frame.py    page config, the sidebar, the table of views (`main`)
    sidebar.py  photos, network and weights, dataset statistics
    state.py    process-wide caches (results, figures, statistics) and the page's data
    common.py   the error funnel, charts, tables, the queue notice
    views/      one module per tab: its LABEL and render(page)
"""
