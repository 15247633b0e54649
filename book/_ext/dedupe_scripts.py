"""Drop repeated ``<script>`` entries from each page.

Jupyter Book 1 with Sphinx 7.4 registers some inline scripts (the Thebe configuration) twice, and the second copy
throws "already declared" in the browser, which the book check counts as a JavaScript error.
"""


def _dedupe(app, pagename, templatename, context, doctree):
    files = context.get("script_files")
    if not files:
        return
    seen, unique = set(), []
    for js in files:
        key = (js.filename or "", js.priority, tuple(sorted(js.attributes.items())))
        if key not in seen:
            seen.add(key)
            unique.append(js)
    files[:] = unique


def setup(app):
    """Register the hook with Sphinx."""
    app.connect("html-page-context", _dedupe)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
