"""The web app (`rnnkit app`): pages to try the served models and browse training results.

server.py is the HTTP server, api.py the JSON API it answers through the model server's gRPC API,
pages.py the HTML pages (templates/), runs.py the run directories; static/ holds the stylesheet and
the pages' scripts.
"""
