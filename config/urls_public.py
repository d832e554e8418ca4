"""The public site: landing, signup, login, password reset, platform admin, health."""
from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import path

from accounts import views as account_views
from accounts.forms import ThrottledAdminLoginForm
from config import health
from config.metrics import metrics_view
from tenants import views as tenant_views

admin.site.site_header = "CustomerCareGPT platform admin"
admin.site.login_form = ThrottledAdminLoginForm  # the product login's throttle (accounts/throttles.py)

urlpatterns = [
    path("", tenant_views.landing, name="landing"),
    path("signup/", tenant_views.signup, name="signup"),
    path("login/", account_views.public_login, name="login"),
    path("logout/", account_views.logout_view, name="logout"),
    path("workspaces/", account_views.workspace_choose, name="workspace-choose"),
    path("workspaces/<slug:slug>/go/", account_views.workspace_go, name="workspace-go"),
    path("password-reset/", account_views.ThrottledPasswordResetView.as_view(), name="password_reset"),
    path("password-reset/sent/", auth_views.PasswordResetDoneView.as_view(), name="password_reset_done"),
    path("reset/<uidb64>/<token>/", auth_views.PasswordResetConfirmView.as_view(), name="password_reset_confirm"),
    path("reset/done/", auth_views.PasswordResetCompleteView.as_view(), name="password_reset_complete"),
    path("admin/login/", account_views.admin_login),  # before admin.site.urls: the same form, 429 when throttled
    path("admin/", admin.site.urls),
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("metrics", metrics_view, name="metrics"),
]
handler404 = "config.views.not_found"
handler500 = "config.views.server_error"
