"""What the user sees, one module per tab (``app/views/<tab>.py``) plus :mod:`app.views.common` for what
several tabs draw. Pure presentation: library results in, images, HTML, tables and plotly figures out; a
views module imports only :mod:`app.views.common`, numpy/plotly and :mod:`prolab` (never gradio, the
handlers, the services or another tab's views; ``tests/test_structure_views.py``).
"""
