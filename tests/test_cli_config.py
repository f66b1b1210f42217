"""`can config dev` and `can config show` as a user runs them, then a gateway started from the file they wrote."""

import os
import subprocess
import tomllib
from pathlib import Path

import openai

from tests.processes import REPO_ROOT, start_gateway_processes
from tests.stack import API_KEY

CAN = REPO_ROOT / ".venv" / "bin" / "can"
SECRET = "sk-secret-value-123"


def _can(cwd: Path, config: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("CHITTYCAN_") and not k.endswith("_API_KEY")}
    environ.update({"CHITTYCAN_CONFIG": str(config), "OPENAI_API_KEY": SECRET, **(env or {})})
    return subprocess.run(
        [str(CAN), *args], cwd=cwd, env=environ, capture_output=True, text=True, timeout=60, check=False
    )


def test_dev_on_writes_the_file_and_show_masks_secrets(tmp_path: Path) -> None:
    config = tmp_path / "conf" / "chittycan.toml"
    done = _can(tmp_path, config, "config", "dev", "--use-ollama")
    assert done.returncode == 0, done.stderr
    assert str(config) in done.stdout
    written = tomllib.loads(config.read_text())
    assert written["server"]["mode"] == "dev"
    assert written["server"]["dev_provider"] == "ollama"

    shown = _can(tmp_path, config, "config", "show", env={"ANTHROPIC_API_KEY": "sk-ant-another-secret-456"})
    assert shown.returncode == 0, shown.stderr
    assert 'mode = "dev"' in shown.stdout
    assert SECRET not in shown.stdout + shown.stderr
    assert "sk-ant-another-secret-456" not in shown.stdout
    effective = tomllib.loads(shown.stdout)
    assert effective["providers"]["openai"]["api_key"] not in ("", SECRET)
    assert effective["providers"]["openai"]["api_key_env"] == "OPENAI_API_KEY"
    assert effective["server"]["dev_model"] == "llama3"


def test_dev_options_and_off_keep_the_rest_of_the_file(tmp_path: Path) -> None:
    config = tmp_path / "chittycan.toml"
    config.write_text('[cache]\nmode = "off"\n')
    done = _can(tmp_path, config, "config", "dev", "--use-ollama", "--model", "qwen2.5", "--ollama-url", "http://o:1")
    assert done.returncode == 0, done.stderr
    written = tomllib.loads(config.read_text())
    assert written["server"] == {
        "mode": "dev",
        "dev_provider": "ollama",
        "dev_model": "qwen2.5",
        "dev_embedding_model": "",
    }
    assert written["providers"]["ollama"]["base_url"] == "http://o:1"
    assert written["cache"] == {"mode": "off"}
    assert _can(tmp_path, config, "config", "dev", "--off").returncode == 0
    assert tomllib.loads(config.read_text())["server"]["mode"] == "normal"
    assert 'mode = "normal"' in _can(tmp_path, config, "config", "show").stdout


def test_show_reflects_the_environment(tmp_path: Path) -> None:
    config = tmp_path / "absent.toml"
    shown = _can(
        tmp_path, config, "config", "show", env={"CHITTYCAN_MODE": "dev", "OLLAMA_BASE_URL": "http://gpu:11434"}
    )
    assert shown.returncode == 0, shown.stderr
    effective = tomllib.loads(shown.stdout)
    assert effective["server"]["mode"] == "dev"
    assert effective["providers"]["ollama"]["base_url"] == "http://gpu:11434"


def test_invalid_mode_is_refused(tmp_path: Path) -> None:
    shown = _can(tmp_path, tmp_path / "absent.toml", "config", "show", env={"CHITTYCAN_MODE": "devv"})
    assert shown.returncode == 2
    assert "CHITTYCAN_MODE" in shown.stderr


def test_gateway_started_from_the_written_config_serves_from_ollama(tmp_path: Path) -> None:
    config = tmp_path / "chittycan.toml"
    assert _can(tmp_path, config, "config", "dev", "--use-ollama").returncode == 0
    with (
        start_gateway_processes(tmp_path / "gateway", extra_env={"CHITTYCAN_CONFIG": str(config)}) as gateway,
        openai.OpenAI(api_key=API_KEY, base_url=gateway.base_url, max_retries=0) as sdk,
    ):
        raw = sdk.chat.completions.with_raw_response.create(
            model="claude-sonnet-4", messages=[{"role": "user", "content": "hello"}]
        )
        assert raw.headers["x-chittycan-model"] == "ollama/llama3", gateway.stderr()
        assert raw.headers["x-chittycan-cost"] == "0.000000"
        assert raw.parse().choices[0].message.content == "Hello! You said: hello"
