"""Traffic changes that cannot surprise, on both backends (issue 7, item 18).

The local workspace refuses exactly what AzureMLService refuses (see test_azureml_service.py for the
Azure side over the replay transport): a split that is no longer the one the caller saw, an endpoint
still in the middle of an operation, and live traffic on a mirrored deployment. Each refusal writes
nothing.
"""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from adapters.azureml.workspace import AzureMLService
from adapters.local.workspace import LocalWorkspace
from adapters.service import Conflict, InvalidRequest
from tests.replay import FakeWorkspace, ml_client

NOW = datetime(2025, 3, 10, 9, 30, tzinfo=timezone.utc)


@pytest.fixture
def local(tmp_path):
    with LocalWorkspace(tmp_path / "workspace.db", clock=lambda: NOW) as workspace:
        yield workspace


@pytest.fixture
def azure():
    workspace = FakeWorkspace()
    return workspace, AzureMLService(ml_client(workspace.transport))


def set_local_state(ws: LocalWorkspace, endpoint: str, state: str) -> None:
    with ws._tx() as conn:               # what a workspace file written mid-operation holds
        conn.execute("UPDATE endpoints SET provisioning_state = ? WHERE name = ?", (state, endpoint))


def test_local_applies_a_change_from_the_split_it_was_given(local):
    seen = local.get_endpoint("fraud-api").traffic
    assert local.set_traffic("fraud-api", {"blue": 50, "green": 50}, expected=seen).wait(None) == (
        "Traffic on fraud-api is now blue=50 green=50.")


def test_local_refuses_a_split_that_moved_and_says_what_it_is_now(local):
    seen = local.get_endpoint("fraud-api").traffic                 # {"blue": 90, "green": 10}
    local.set_traffic("fraud-api", {"blue": 0, "green": 100})       # a colleague, meanwhile
    with pytest.raises(Conflict) as info:
        local.set_traffic("fraud-api", {"blue": 50, "green": 50}, expected=seen)
    assert info.value.code == "TrafficChanged"
    assert info.value.message == ("The traffic of fraud-api changed since it was read: it is now green=100, not "
                                  "blue=90 green=10. Nothing was changed; look at the endpoint again and repeat "
                                  "the change if it still applies.")
    assert local.get_endpoint("fraud-api").traffic == {"blue": 0, "green": 100}


def test_local_zero_shares_count_as_absent(local):
    local.set_traffic("fraud-api", {"green": 100}, expected={"blue": 90, "green": 10, "canary": 0}).wait(None)
    local.set_traffic("fraud-api", {"blue": 100}, expected={"green": 100}).wait(None)
    assert local.get_endpoint("fraud-api").traffic == {"blue": 100, "green": 0}


@pytest.mark.parametrize("state", ["Creating", "Updating", "Deleting"])
def test_local_refuses_an_endpoint_mid_operation(local, state):
    set_local_state(local, "fraud-api", state)
    with pytest.raises(Conflict) as info:
        local.set_traffic("fraud-api", {"blue": 50, "green": 50})
    assert info.value.code == "EndpointBusy"
    assert info.value.message.startswith(f"Endpoint fraud-api is still {state}: Azure ML accepts no new change")
    assert local.get_endpoint("fraud-api").traffic == {"blue": 90, "green": 10}


def test_local_refuses_live_traffic_on_a_mirrored_deployment(local):
    with pytest.raises(InvalidRequest) as info:
        local.set_traffic("credit-api", {"blue": 50, "shadow": 50})
    assert info.value.code == "MirroredDeployment"
    assert info.value.message.startswith("Deployment shadow receives mirrored traffic (20 %) on credit-api; Azure ML "
                                         "does not let a deployment take both live and mirrored traffic.")
    assert local.get_endpoint("credit-api").traffic == {"blue": 100, "shadow": 0}


@pytest.mark.parametrize("backend", ["local", "azure"])
def test_both_backends_word_the_refusals_alike(backend, local, azure):
    if backend == "local":
        ml, make_busy = local, lambda: set_local_state(local, "fraud-api", "Updating")
    else:
        workspace, ml = azure
        make_busy = lambda: workspace.get("onlineEndpoints", "fraud-api")["properties"].update(  # noqa: E731
            provisioningState="Updating")
    with pytest.raises(Conflict) as moved:
        ml.set_traffic("fraud-api", {"blue": 50, "green": 50}, expected={"blue": 80, "green": 20})
    assert moved.value.message.startswith("The traffic of fraud-api changed since it was read: it is now "
                                          "blue=90 green=10, not blue=80 green=20.")
    make_busy()
    with pytest.raises(Conflict) as busy:
        ml.set_traffic("fraud-api", {"blue": 50, "green": 50})
    assert busy.value.message == ("Endpoint fraud-api is still Updating: Azure ML accepts no new change to an "
                                  "endpoint until its current operation has finished. Try again once it shows "
                                  "Succeeded.")
