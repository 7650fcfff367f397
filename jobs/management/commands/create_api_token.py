"""`manage.py create_api_token USERNAME [--admin]`: print a new token for USERNAME, only that."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from jobs.git import name_errors
from jobs.services.tokens import token_create, user_get_or_create


class Command(BaseCommand):
    help = "Create USERNAME if needed and print a new API token for it (and nothing else)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")
        parser.add_argument("--admin", action="store_true", help="make the user an admin")

    def handle(self, *args: Any, username: str, admin: bool, **options: Any) -> None:
        if name_errors(username) or "/" in username:
            raise CommandError(
                "USERNAME must start with a letter and contain only letters, digits, "
                "'_', '-' and '.'"
            )
        user = user_get_or_create(username=username, admin=admin)
        self.stdout.write(token_create(user=user).api_token or "")
