"""The intents: business handlers by family. ``manifest.py`` lists every one."""
