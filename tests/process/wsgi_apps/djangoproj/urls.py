from django.urls import path

from djangoproj import views

urlpatterns = [
    path("json", views.json_items),
    path("form", views.form),
    path("upload", views.upload),
    path("stream", views.stream),
    path("redirect", views.go),
    path("boom", views.boom),
    path("echo", views.echo),
    path("query", views.query),
    path("caf\u00e9/\u65e5\u672c", views.non_ascii),
    path("cookie", views.cookie),
    path("set-cookies", views.set_cookies),
]
