"""The file ``se-viz app`` hands to ``streamlit run`` (the installed twin of app.py).

Streamlit executes it as ``__main__`` with no package, so it imports absolutely; the app
itself is `se_viz.app.frame`. Importing this module does nothing.
"""

from se_viz.app.frame import main

if __name__ == "__main__":
    main()
