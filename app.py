"""The se_viz app: ``streamlit run app.py`` in a checkout (``se-viz app`` from an installed
package runs its twin, se_viz/app/script.py).

What it shows lives in `se_viz.app`: the frame (page config, sidebar, the table of views)
in se_viz/app/frame.py, one module per view in se_viz/app/views/. This file only starts it.
"""

from se_viz.app.frame import main

if __name__ == "__main__":
    main()
