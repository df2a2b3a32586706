"""The dashboard's static files, served by :mod:`serving.dashboard` (``/dashboard``, ``/assets/*.js`` and
``*.css``): the page, its script, the chart helper and a vendored uPlot (``uplot/``, with its licence and
source). The replay report (:mod:`streaming.replay.report`; its own page and script are in
``streaming/replay/assets``) inlines the same chart helper and uPlot into its one-file HTML. Shipped as
package data (``pyproject.toml``: ``*.js``, ``*.html``, ``uplot/*``)."""
