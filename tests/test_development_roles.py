"""Development mode's "everyone is Admin until a role is assigned" must not lock its admin out."""

from __future__ import annotations

from adapters.storage import grants
from commands.base.context import Role, RoleBook, User
from tests.conftest import Chat

DEV_BOOK = RoleBook(open_until_assigned=True)
ME = User(id="local-developer", name="Local Developer")
BOB = "00000000-0000-0000-0000-000000000b0b"


async def test_the_first_grant_keeps_its_granter_admin(workspaces, store):
    chat = Chat(workspaces, store, roles=DEV_BOOK, user=ME)
    granted = await chat(f"grant {BOB} approver")          # the example `help grant` gives
    assert granted.text == (f"{BOB} is now Approver. Recorded in the audit trail. You are now Admin by grant too: "
                            "until now everyone was Admin (development mode, no role assigned), and the first role "
                            "assigned ends that for everyone else.")
    assert "Role: Admin" in (await chat("whoami")).text
    assert (await chat(f"revoke {BOB}")).text.startswith(f"{BOB} is no longer Approver")
    stored = await store.run_transaction(grants.list_grants, write=False)
    assert [(g.user_id, g.role) for g in stored] == [(ME.id, "admin")]
    # from the second grant on, nothing more is added
    assert (await chat(f"grant {BOB} operator")).text == f"{BOB} is now Operator. Recorded in the audit trail."
    someone_else = chat.as_(User(id="someone", name="Someone"))
    assert "Role: Viewer" in (await someone_else("whoami")).text


async def test_roles_says_how_to_get_an_admin_when_there_is_none(workspaces, store):
    chat = Chat(workspaces, store, roles=RoleBook(), user=ME)             # production default: Viewer, no admin
    assert ("Nobody is Admin, so nobody can grant or revoke roles here. Set MLOPSBOT_ADMINS to the Entra object "
            "id of an admin (`whoami` shows yours) and restart the bot.") in (await chat("roles")).text
    admin = Chat(workspaces, store, roles=RoleBook({ME.id: Role.ADMIN}), user=ME)
    assert "Nobody is Admin" not in (await admin("roles")).text


async def test_grant_and_roles_name_the_people_the_bot_has_met(workspaces, store):
    from datetime import datetime, timezone

    from adapters.storage import people

    await store.run_transaction(lambda tx: people.remember(tx, BOB, "29:bob", "Bob Builder", "t1",
                                                           now=datetime(2026, 11, 26, tzinfo=timezone.utc)))
    admin = Chat(workspaces, store, roles=RoleBook({ME.id: Role.ADMIN}), user=ME)
    assert (await admin(f"grant {BOB} approver")).text == "Bob Builder is now Approver. Recorded in the audit trail."
    shown = (await admin("roles")).text
    assert f"Bob Builder {BOB}" in shown and f"{ME.id}" in shown
