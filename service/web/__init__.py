"""The web UI: pages and JSON endpoints over the run service, served by runhistory itself.

`api` turns query-layer results into JSON documents, `downsample` reduces long series for
charts, `server` is the HTTP adapter (standard library only) and `static/` holds the pages'
HTML, JS and CSS. Charts use plotly.js from the installed `plotly` package.
"""
