"""Issue #2's acceptance check in Chromium: sign up on the public site → land in the new workspace's dashboard →
invite members → they accept from the emailed link and see only what their role allows → log out and back in through
the public login (handoff to the workspace host) and through the workspace's own login.

Set SCREENSHOT_DIR to keep screenshots of the pages on the way (for looking at the layout).
"""
from __future__ import annotations

import os
import re
import secrets
from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect

from tests.browser.mailbox import Mailbox
from tests.live import LiveServer

pytestmark = pytest.mark.browser

PASSWORD = "Signup-password-4711"


def screenshot(page: Page, name: str) -> None:
    folder = os.environ.get("SCREENSHOT_DIR")
    if not folder:
        return
    Path(folder).mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(Path(folder) / f"{name}.png"), full_page=True)
    desktop = page.viewport_size
    page.set_viewport_size({"width": 390, "height": 844})  # a phone
    page.screenshot(path=str(Path(folder) / f"{name}-phone.png"), full_page=True)
    if desktop:
        page.set_viewport_size(desktop)


def sidenav(page: Page):
    return page.get_by_role("navigation", name="Dashboard")


def log_out(page: Page, server: LiveServer, host: str) -> None:
    page.get_by_role("button", name="Log out").click()
    expect(page).to_have_url(server.url(host, "/login/"))
    expect(page.get_by_role("heading", name="Log in to this workspace")).to_be_visible()
    # Really logged out: the dashboard sends us to the login page again.
    page.goto(server.url(host, "/"))
    expect(page).to_have_url(re.compile(re.escape(server.url(host, "/login/")) + r"\?next=/$"))


def fill_login(page: Page, email: str, password: str) -> None:
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()


def accept_invitation(
    context: BrowserContext, server: LiveServer, mailbox: Mailbox, *, email: str, host: str, workspace_name: str,
    role: str,
) -> Page:
    """A second person, in a browser of their own, follows the emailed link and sets a password."""
    message = mailbox.wait_for(to=email, subject_contains=workspace_name)
    link = mailbox.link(message, "/invitations/")
    assert link.startswith(server.url(host, "/invitations/")), link

    page = context.new_page()
    page.goto(link)
    expect(page.get_by_role("heading", name=f"Join {workspace_name}")).to_be_visible()
    expect(page.get_by_text(f"You were invited as {role}")).to_be_visible()
    screenshot(page, f"accept-{role}")
    page.get_by_label("Your name").fill(f"{role.capitalize()} Person")
    # A weak password is refused next to the password field, and nothing is joined yet.
    page.get_by_label("Password").fill("12345678")
    page.get_by_role("button", name="Accept invitation").click()
    expect(page.locator(".field.has-error").filter(has=page.get_by_label("Password"))).to_contain_text("too common")
    expect(page.get_by_role("heading", name=f"Join {workspace_name}")).to_be_visible()
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Accept invitation").click()

    expect(page).to_have_url(server.url(host, "/"))
    expect(page.get_by_text(f"Welcome to {workspace_name}.")).to_be_visible()
    expect(page.get_by_test_id("role")).to_have_text(role)
    # The invitation link is single-use.
    again = context.new_page()
    assert again.goto(link).status == 404
    again.close()
    return page


def test_signup_invite_and_roles_in_the_browser(
    browser: Browser, new_context, mail_live_server: LiveServer, mailbox: Mailbox
):
    server = mail_live_server
    slug = f"brw-{secrets.token_hex(3)}"
    host = f"{slug}.localhost"
    workspace_name = f"Browser Co {slug[-6:]}"
    owner_email = f"owner-{slug}@example.test"

    # --- the owner signs up on the public site and lands in the new workspace -----------------------------------
    owner = new_context().new_page()
    owner.goto(server.url("localhost", "/signup/"))
    expect(owner.get_by_role("heading", name="Create your workspace")).to_be_visible()
    screenshot(owner, "signup")
    owner.get_by_label("Your name").fill("Olivia Owner")
    owner.get_by_label("Email").fill(owner_email)
    owner.get_by_label("Password").fill(PASSWORD)
    owner.get_by_label("Workspace name").fill(workspace_name)
    owner.get_by_label("Workspace address").fill(slug)
    owner.get_by_role("button", name="Create workspace").click()

    expect(owner).to_have_url(server.url(host, "/"))
    expect(owner.get_by_role("heading", name=workspace_name, exact=True)).to_be_visible()
    expect(owner.get_by_test_id("role")).to_have_text("owner")
    for section in ("Knowledge", "Conversations", "Widgets", "Analytics", "Team", "Settings & plan"):
        expect(sidenav(owner).get_by_role("link", name=section, exact=True)).to_be_visible()
    screenshot(owner, "dashboard-owner")

    # --- the owner invites a viewer and an agent -------------------------------------------------------------------
    sidenav(owner).get_by_role("link", name="Team", exact=True).click()
    expect(owner).to_have_url(server.url(host, "/team/"))
    invitees = {"viewer": f"viewer-{slug}@example.test", "agent": f"agent-{slug}@example.test"}
    for role, email in invitees.items():
        owner.get_by_label("Email", exact=True).fill(email)
        owner.get_by_label("Role", exact=True).select_option(role)
        owner.get_by_role("button", name="Send invitation").click()
        expect(owner.get_by_text(f"Invitation sent to {email}.")).to_be_visible()
        pending = owner.get_by_role("list", name="Pending invitations")
        expect(pending.get_by_role("listitem").filter(has_text=email)).to_contain_text(f"— {role}")
    screenshot(owner, "team-owner")

    # --- the viewer accepts and sees only what a viewer may --------------------------------------------------------
    viewer_context = new_context()
    viewer = accept_invitation(
        viewer_context, server, mailbox, email=invitees["viewer"], host=host, workspace_name=workspace_name,
        role="viewer",
    )
    screenshot(viewer, "dashboard-viewer")
    for section in ("Knowledge", "Conversations", "Widgets", "Analytics"):
        expect(sidenav(viewer).get_by_role("link", name=section, exact=True)).to_be_visible()
    for section in ("Team", "Settings & plan"):
        expect(sidenav(viewer).get_by_role("link", name=section, exact=True)).to_have_count(0)
    expect(viewer.get_by_role("link", name="Team")).to_have_count(0)  # nor a card on the home page
    for path in ("/team/", "/settings/", "/settings/api-keys/", "/settings/audit-log/"):
        response = viewer.goto(server.url(host, path))
        assert response is not None and response.status == 403, path
        expect(viewer.get_by_role("heading", name="Not allowed")).to_be_visible()
        expect(viewer.get_by_text(invitees["agent"])).to_have_count(0)
    screenshot(viewer, "forbidden-viewer")
    for path in ("/knowledge/", "/conversations/", "/analytics/"):
        response = viewer.goto(server.url(host, path))
        assert response is not None and response.status == 200, path

    # --- the agent accepts: Team is visible, but without the invite form ------------------------------------------
    agent_context = new_context()
    agent = accept_invitation(
        agent_context, server, mailbox, email=invitees["agent"], host=host, workspace_name=workspace_name, role="agent"
    )
    expect(sidenav(agent).get_by_role("link", name="Settings & plan", exact=True)).to_have_count(0)
    sidenav(agent).get_by_role("link", name="Team", exact=True).click()
    expect(agent).to_have_url(server.url(host, "/team/"))
    members = agent.get_by_role("table", name="Members")
    for email in (owner_email, *invitees.values()):
        expect(members).to_contain_text(email)
    expect(agent.get_by_role("heading", name="Invite someone")).to_have_count(0)
    expect(agent.get_by_role("button", name="Send invitation")).to_have_count(0)
    expect(agent.get_by_role("button", name="Remove")).to_have_count(0)
    screenshot(agent, "team-agent")
    # Nor can the agent invite by posting the form by hand.
    forged_status = agent.evaluate(
        """async (email) => {
            const csrf = document.cookie.match(/csrftoken=([^;]+)/)[1];
            const response = await fetch("/team/", {
                method: "POST", headers: {"X-CSRFToken": csrf}, body: new URLSearchParams({email, role: "owner"}),
            });
            return response.status;
        }""",
        f"sneaky-{slug}@example.test",
    )
    assert forged_status == 403
    owner.reload()
    expect(owner.get_by_text(f"sneaky-{slug}@example.test")).to_have_count(0)

    # --- log out, and log in again through the public login (handoff) and the workspace's login -------------------
    log_out(viewer, server, host)
    viewer.goto(server.url("localhost", "/login/"))
    screenshot(viewer, "login-public")
    fill_login(viewer, invitees["viewer"], PASSWORD)
    expect(viewer).to_have_url(server.url(host, "/"))
    expect(viewer.get_by_test_id("role")).to_have_text("viewer")

    log_out(viewer, server, host)
    viewer.goto(server.url(host, "/login/"))
    fill_login(viewer, invitees["viewer"], "Wrong-password-000")
    expect(viewer.get_by_text("Email or password is wrong.")).to_be_visible()
    screenshot(viewer, "login-workspace-error")
    fill_login(viewer, invitees["viewer"], PASSWORD)
    expect(viewer).to_have_url(server.url(host, "/"))
    expect(viewer.get_by_test_id("role")).to_have_text("viewer")
    expect(sidenav(viewer).get_by_role("link", name="Team", exact=True)).to_have_count(0)

    log_out(agent, server, host)
    agent.goto(server.url("localhost", "/login/"))
    fill_login(agent, invitees["agent"], PASSWORD)
    expect(agent).to_have_url(server.url(host, "/"))
    expect(agent.get_by_test_id("role")).to_have_text("agent")


def test_signup_with_bad_input_shows_the_field_error_in_the_browser(
    new_context, mail_live_server: LiveServer
):
    server = mail_live_server
    page = new_context().new_page()
    page.goto(server.url("localhost", "/signup/"))
    page.get_by_label("Email").fill(f"bad-{secrets.token_hex(3)}@example.test")
    page.get_by_label("Password").fill("password123")
    page.get_by_label("Workspace name").fill("Bad Input Co")
    page.get_by_label("Workspace address").fill("www")
    page.get_by_role("button", name="Create workspace").click()

    expect(page).to_have_url(server.url("localhost", "/signup/"))
    expect(page.get_by_text("This password is too common.")).to_be_visible()
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Create workspace").click()
    expect(page.get_by_text("That address is reserved.")).to_be_visible()
    expect(page.get_by_label("Workspace address")).to_have_value("www")
    screenshot(page, "signup-error")


def test_unknown_workspace_host_shows_a_clear_page(new_context, mail_live_server: LiveServer):
    page = new_context().new_page()
    response = page.goto(mail_live_server.url(f"nowhere-{secrets.token_hex(3)}.localhost", "/"))
    assert response is not None and response.status == 404
    expect(page.get_by_role("heading", name="No workspace at this address")).to_be_visible()
    screenshot(page, "no-workspace")
