"""Drop-in replacements for other real-time libraries' public surfaces, on
notifier's delivery (``compat.flask_sse``)."""
