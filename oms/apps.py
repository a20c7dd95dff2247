from django.apps import AppConfig


class OmsConfig(AppConfig):
    name = "oms"
    default_auto_field = "django.db.models.BigAutoField"
