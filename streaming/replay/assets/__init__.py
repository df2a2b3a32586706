"""The replay report's page and script, which :mod:`streaming.replay.report` inlines into one offline HTML
file with the dashboard's chart helper and vendored uPlot (read from :mod:`serving.assets`, their one
copy)."""
