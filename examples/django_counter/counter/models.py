"""A page and its views: a counter on the page, one row per view."""

from django.db import models


class Page(models.Model):
    name = models.CharField(max_length=100, unique=True)
    views = models.IntegerField(default=0)


class View(models.Model):
    page = models.ForeignKey(Page, on_delete=models.CASCADE, related_name="log")
    ts = models.FloatField()
