"""One module per tab: ``layout(ui)`` creates components, ``wire(ui, res)`` connects events."""
