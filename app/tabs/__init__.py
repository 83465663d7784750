"""One module per tab: ``layout(...)`` creates its components; its handlers (``@handler``, app/handlers.py)
declare the events that run them."""
