"""The awaitable facade (adapters.nonblocking.NonBlockingService) declares every method of the
port (adapters.service.MLService), with the same parameters, so that a call such as
`ctx.ml.set_traffic(...)` has a definition to jump to and a type to check (issue #18)."""

from __future__ import annotations

import inspect

from adapters.nonblocking import READS, NonBlockingService
from adapters.service import MLService


def port_methods() -> dict[str, inspect.Signature]:
    return {name: inspect.signature(fn) for name, fn in vars(MLService).items()
            if not name.startswith("_") and callable(fn)}


def test_the_facade_has_every_method_of_the_port_with_its_parameters():
    port = port_methods()
    assert len(port) == 35
    for name, signature in port.items():
        facade = getattr(NonBlockingService, name)
        assert inspect.iscoroutinefunction(facade), name
        assert list(inspect.signature(facade).parameters.values()) == list(signature.parameters.values()), name


def test_every_read_the_facade_shares_is_a_method_of_the_port():
    assert READS <= set(port_methods())
    assert {"get_endpoint", "list_models", "endpoint_metrics", "endpoints_metrics"} <= READS
    assert not {"set_traffic", "scale_deployment", "cancel_job", "set_model_stage", "trigger_retraining"} & READS
