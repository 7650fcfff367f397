from django.apps import AppConfig


class JobsConfig(AppConfig):
    name = "jobs"
    verbose_name = "Crunch"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from jobs import prepared

        prepared.connect()
