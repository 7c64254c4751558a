from django.contrib import admin
from django.urls import include, path

from xmpp import discovery
from xmpp.transport.bosh import http_bind

urlpatterns = [
    path("admin/", admin.site.urls),
    # The web console, self-service page, allauth login and REST API (admin_ui/).
    path("", include("admin_ui.urls")),
    path("accounts/", include("allauth.urls")),
    path(".well-known/host-meta", discovery.host_meta),  # XEP-0156
    path(".well-known/host-meta.json", discovery.host_meta_json),  # XEP-0156
    path("http-bind/", http_bind),  # BOSH, XEP-0124 and XEP-0206
    path("http-bind", http_bind),  # the same, for clients configured without the slash
]
