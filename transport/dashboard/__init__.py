"""``orchestra dashboard``: a live console view of a running server, a plain client of the
public protocol (docs/dashboard.md). The pure model (model.py) and renderer (render.py) are
tested without a terminal; app.py connects, polls and draws."""
