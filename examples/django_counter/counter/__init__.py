"""A page-view counter: the smallest Django project on the sqlite-gateway backend.

One package is both the project (settings, urls, wsgi) and its app (models, views,
migrations). ``GET /<page>/`` counts a view of ``<page>`` and answers its count.
"""
