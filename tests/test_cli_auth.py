"""Token lifecycle as a user runs it: `can auth token create|list|revoke` as subprocesses, then the official SDK."""

import os
import subprocess
import sys
from pathlib import Path

import openai
import pytest

from tests.stack import Stack

CAN = [str(Path(sys.executable).parent / "can")]
REPO = Path(__file__).resolve().parent.parent


def can(stack: Stack, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run `can` against the stack's engine, as a user would from the gateway's working directory."""
    full_env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("CHITTYCAN_")},
        "CHITTYCAN_ENGINE_ADDR": f"127.0.0.1:{stack.engine.port}",
        "CHITTYCAN_DATA_DIR": str(stack.settings.data_dir),
        "CHITTYCAN_CONFIG": str(stack.settings.data_dir / "absent.toml"),
        **(env or {}),
    }
    return subprocess.run(
        [*CAN, *args], capture_output=True, text=True, env=full_env, cwd=REPO, timeout=60, check=False
    )


def test_token_lifecycle_through_the_cli_and_sdk(stack: Stack) -> None:
    created = can(stack, "auth", "token", "create", "--scopes", "ai:read,ai:write", "--tenant", "team-a")
    assert created.returncode == 0, created.stderr
    secret = created.stdout.splitlines()[0]
    assert secret.startswith("chitty_")
    assert len(secret) > 40
    token_id = created.stdout.split("id ")[1].split()[0]

    with openai.OpenAI(api_key=secret, base_url=stack.base_url, max_retries=0) as sdk:
        raw = sdk.chat.completions.with_raw_response.create(
            model="gpt-4o", messages=[{"role": "user", "content": "hi"}]
        )
        assert raw.parse().choices[0].message.content == "Hello! You said: hi"
        assert raw.headers["x-chittycan-tenant"] == "team-a"
        sent = stack.upstream_requests("/v1/chat/completions")[-1]
        assert sent.headers["authorization"] == "Bearer sk-gateway-openai", "the gateway's own key goes upstream"
        assert "claude-sonnet-4" in [m.id for m in sdk.models.list()]

        listed = can(stack, "auth", "token", "list")
        assert listed.returncode == 0, listed.stderr
        assert token_id in listed.stdout
        assert "team-a" in listed.stdout
        assert secret not in listed.stdout

        revoked = can(stack, "auth", "token", "revoke", token_id)
        assert revoked.returncode == 0, revoked.stderr
        with pytest.raises(openai.AuthenticationError) as caught:
            sdk.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
        assert caught.value.code == "invalid_api_key"
        assert "revoked" in caught.value.message
    assert "revoked" in can(stack, "auth", "token", "list").stdout


def test_admin_calls_and_the_dashboard_need_the_master_key(stack: Stack) -> None:
    refused = can(stack, "auth", "token", "list", env={"CHITTYCAN_MASTER_KEY": "wrong"})
    assert refused.returncode == 1
    assert "Admin calls need the master key" in refused.stdout
    refused = can(stack, "registry", "metrics", "show", env={"CHITTYCAN_MASTER_KEY": "wrong"})
    assert refused.returncode == 1
    assert "Dashboards need the master key" in refused.stderr
    shown = can(stack, "registry", "metrics", "show")  # the key the engine wrote under its data directory
    assert shown.returncode == 0, shown.stderr
    assert "ChittyCan Proxy Metrics" in shown.stdout


def test_commands_without_any_master_key_say_where_it_is_looked_for(stack: Stack, tmp_path: Path) -> None:
    for command in (("auth", "token", "list"), ("registry", "metrics", "show")):
        missing = can(stack, *command, env={"CHITTYCAN_DATA_DIR": str(tmp_path)})
        assert missing.returncode == 2
        assert (
            f"no master key. Set CHITTYCAN_MASTER_KEY, or run this where the engine's data directory ({tmp_path})"
            in (missing.stdout + missing.stderr)
        )


def test_budget_commands(stack: Stack) -> None:
    assert can(stack, "budget", "set", "team-b", "25").returncode == 0
    shown = can(stack, "budget", "show", "team-b")
    assert shown.returncode == 0, shown.stderr
    assert "budget $25.00" in shown.stdout
    assert "spent $0.00" in shown.stdout


def test_token_create_follows_the_playbooks_tenant_and_budget_variables(stack: Stack) -> None:
    # The playbook exports CHITTY_TENANT_ID and CHITTY_BUDGET_MONTHLY_USD, then runs `can auth token create`.
    playbook_env = {"CHITTY_TENANT_ID": "team-env", "CHITTY_BUDGET_MONTHLY_USD": "7"}
    created = can(stack, "auth", "token", "create", "--scopes", "ai:read,ai:write", env=playbook_env)
    assert created.returncode == 0, created.stderr
    assert "tenant team-env" in created.stdout
    assert "budget $7.00/month" in created.stdout
    secret = created.stdout.splitlines()[0]
    with openai.OpenAI(api_key=secret, base_url=stack.base_url, max_retries=0) as sdk:
        raw = sdk.chat.completions.with_raw_response.create(
            model="gpt-4o", messages=[{"role": "user", "content": "hi"}]
        )
    assert raw.headers["x-chittycan-tenant"] == "team-env"
    assert 0 < float(raw.headers["x-chittycan-budget-remaining"]) < 7
    assert "budget $7.00" in can(stack, "budget", "show", "team-env").stdout

    # An explicit --tenant wins, and the deployment's budget is not applied to it.
    other = can(stack, "auth", "token", "create", "--tenant", "team-own", env=playbook_env)
    assert other.returncode == 0, other.stderr
    assert "tenant team-own" in other.stdout
    assert "budget" not in other.stdout.splitlines()[1]
    assert "budget none" in can(stack, "budget", "show", "team-own").stdout
