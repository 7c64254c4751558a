"""The console at /console/, the self-service page at /me/, the API at /api/."""

from django.urls import include, path

from . import views

app_name = "admin_ui"

console = [
    path("", views.dashboard, name="dashboard"),
    path("users/", views.users, name="users"),
    path("users/new/", views.user_create, name="user_create"),
    path("users/<str:username>/", views.user_detail, name="user"),
    path("users/<str:username>/password/", views.user_password, name="user_password"),
    path("users/<str:username>/lock/", views.user_lock, name="user_lock"),
    path("users/<str:username>/delete/", views.user_delete, name="user_delete"),
    path("sessions/", views.sessions, name="sessions"),
    path("sessions/<str:session_id>/kick/", views.session_kick, name="session_kick"),
    path("groups/", views.groups, name="groups"),
    path("groups/new/", views.group_edit, name="group_create"),
    path("groups/<int:pk>/", views.group_edit, name="group"),
    path("groups/<int:pk>/delete/", views.group_delete, name="group_delete"),
    path("rooms/", views.rooms, name="rooms"),
    path("rooms/<str:name>/", views.room_detail, name="room"),
    path("nodes/", views.nodes, name="nodes"),
    path("nodes/<int:pk>/", views.node_detail, name="node"),
    path("settings/", views.server_settings_view, name="settings"),
    path("broadcast/", views.broadcast, name="broadcast"),
    path("certificate/", views.certificate, name="certificate"),
    path("audit/", views.audit_log, name="audit"),
    path("tokens/", views.tokens, name="tokens"),
    path("tokens/<int:pk>/revoke/", views.token_revoke, name="token_revoke"),
]

urlpatterns = [
    path("console/", include(console)),
    path("me/", views.selfservice, name="selfservice"),
    path("me/sessions/<str:session_id>/end/", views.selfservice_kick, name="selfservice_kick"),
    path("api/", include(("admin_ui.api.urls", "api"))),
    # Ahead of allauth's: no e-mail is sent, an administrator resets passwords.
    path("accounts/password/reset/", views.password_reset_unavailable),
]
