"""MoCo v2 (arXiv:2003.04297 / 1911.05722): loss against a reference written from the paper,
the key encoder's stop-gradient and exact EMA update, the queue's order and wrap-around,
Shuffling BN (1 and 2 processes), heads."""

from __future__ import annotations

import copy
from functools import partial

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from siamkit import distributed
from siamkit.errors import ConfigError
from siamkit.methods import METHODS, MoCoV2, MoCoV2Config
from siamkit.methods.moco_v2 import Queue
from tests.ddp import run_ddp
from tests.methods.conftest import BATCH, build, param_pairs, random_views, small_backbone

SMALL = {"proj_dim": 16, "proj_hidden_dim": 24, "queue_size": 20}

_v2 = partial(build, MoCoV2, MoCoV2Config, SMALL)


def test_registered_with_paper_defaults():
    assert METHODS["moco_v2"].config_class is MoCoV2Config
    v2 = MoCoV2Config()
    assert (v2.queue_size, v2.momentum, v2.temperature, v2.proj_dim) == (65536, 0.999, 0.2, 128)


# --------------------------------------------------------------------------------------------
# Queue
# --------------------------------------------------------------------------------------------
def test_queue_push_order_and_wrap_around():
    queue = Queue(5, 2)
    assert queue.keys.shape == (5, 2) and int(queue.ptr) == 0
    torch.testing.assert_close(queue.keys.norm(dim=1), torch.ones(5))  # random unit keys
    a = torch.arange(6.0).view(3, 2)
    queue.push(a)
    torch.testing.assert_close(queue.keys[:3], a)
    assert int(queue.ptr) == 3
    b = 10 + torch.arange(6.0).view(3, 2)
    queue.push(b)  # rows 3, 4, then wraps to 0
    torch.testing.assert_close(queue.keys[3:5], b[:2])
    torch.testing.assert_close(queue.keys[0], b[2])
    torch.testing.assert_close(queue.keys[1:3], a[1:])  # the oldest surviving keys
    assert int(queue.ptr) == 1
    with pytest.raises(ValueError):
        queue.push(torch.zeros(6, 2))


def test_queue_stores_detached_keys_in_its_state_dict():
    queue = Queue(4, 3)
    keys = torch.randn(2, 3, requires_grad=True)
    queue.push(keys * 2)
    assert not queue.keys.requires_grad
    state = queue.state_dict()
    assert set(state) == {"keys", "ptr"}
    fresh = Queue(4, 3)
    fresh.load_state_dict(state)
    torch.testing.assert_close(fresh.keys, queue.keys)
    assert int(fresh.ptr) == 2


# --------------------------------------------------------------------------------------------
# The method
# --------------------------------------------------------------------------------------------
def _info_nce_reference(q, k, queue, tau):
    """MoCo Eq. 1 / Alg. 1: logits [q.k+, q.queue] / tau, CE with label 0, q and k normalised."""
    q, k = F.normalize(q, dim=1), F.normalize(k, dim=1)
    l_pos = (q * k).sum(1, keepdim=True)
    l_neg = q @ queue.t()
    logits = torch.cat([l_pos, l_neg], 1) / tau
    return -(logits[:, 0] - torch.logsumexp(logits, 1)).mean()


@pytest.mark.parametrize("symmetric", [False, True])
def test_v2_loss_and_query_gradients_match_reference(symmetric):
    method = _v2(symmetric=symmetric)
    ref = copy.deepcopy(method)
    views = random_views()
    queue_before = method.queue.keys.clone()
    loss = method.training_step(views)["loss"]

    q = [ref.projector(ref.backbone.forward_features(v)) for v in views]
    with torch.no_grad():
        k = [ref.key_projector(ref.key_backbone.forward_features(v)) for v in views]
    expected = _info_nce_reference(q[0], k[1], queue_before, 0.2)
    if symmetric:
        expected = expected + _info_nce_reference(q[1], k[0], queue_before, 0.2)
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-6)
    loss.backward()
    expected.backward()
    theirs = dict(ref.named_parameters())
    for name, p in method.named_parameters():
        if name.startswith("key_"):
            continue
        torch.testing.assert_close(p.grad, theirs[name].grad, rtol=1e-4, atol=1e-5, msg=name)


def test_v2_key_encoder_gets_no_gradient():
    method = _v2()
    key_params = [*method.key_backbone.parameters(), *method.key_projector.parameters()]
    assert key_params and not any(p.requires_grad for p in key_params)
    method.training_step(random_views())["loss"].backward()
    assert all(p.grad is None for p in key_params)
    grouped = {id(p) for g in method.param_groups() for p in g["params"]}
    assert grouped.isdisjoint(id(p) for p in key_params)


def test_v2_pushes_this_batchs_normalised_detached_keys_after_the_loss():
    method = _v2()
    views = random_views()
    old = method.queue.keys.clone()
    with torch.no_grad():
        k = F.normalize(method.key_projector(method.key_backbone.forward_features(views[1])), dim=1)
    method.training_step(views)
    torch.testing.assert_close(method.queue.keys[:BATCH], k)
    torch.testing.assert_close(method.queue.keys[BATCH:], old[BATCH:])
    assert int(method.queue.ptr) == BATCH and not method.queue.keys.requires_grad
    method.training_step(views)
    method.training_step(views)  # 24 keys into a queue of 20: wraps to slot 4
    assert int(method.queue.ptr) == (3 * BATCH) % SMALL["queue_size"]


def test_v2_on_step_end_is_exactly_the_ema_formula():
    method = _v2()
    with torch.no_grad():  # make the query encoder differ from its copy, as after some steps
        for p in [*method.backbone.parameters(), *method.projector.parameters()]:
            p.add_(torch.randn_like(p))
    online = [method.backbone, method.projector]
    target = [method.key_backbone, method.key_projector]
    before = [(o.clone(), t.clone()) for o, t in param_pairs(online, target)]
    method.on_step_end(0.3)
    m = 0.999
    for (o, t), (o_new, t_new) in zip(before, param_pairs(online, target), strict=True):
        torch.testing.assert_close(o_new, o)  # the online network is not touched
        torch.testing.assert_close(t_new, m * t + (1 - m) * o, rtol=1e-6, atol=1e-7)
        assert not torch.equal(t_new, t)


def test_v2_shuffle_with_one_group_and_one_process_is_a_no_op():
    method = _v2(shuffle_groups=1)
    x = random_views()[1]
    torch.manual_seed(0)
    keys = method.shuffled_keys(x)
    with torch.no_grad():
        plain = F.normalize(method.encode_key(x), dim=1)
    torch.testing.assert_close(keys, plain)


def test_v2_shuffle_groups_normalise_shuffled_sub_batches_and_restore_the_order():
    method = _v2(shuffle_groups=2)
    x = random_views()[1]
    torch.manual_seed(3)
    keys = method.shuffled_keys(x)
    torch.manual_seed(3)
    perm = torch.randperm(BATCH)
    with torch.no_grad():
        parts = [method.encode_key(x[perm[:4]]), method.encode_key(x[perm[4:]])]
        expected = F.normalize(torch.cat(parts), dim=1)[torch.argsort(perm)]
        whole = F.normalize(method.encode_key(x), dim=1)
    torch.testing.assert_close(keys, expected)
    assert not torch.allclose(keys, whole, atol=1e-4)  # other BN statistics than the whole batch
    method.eval()  # with running statistics the shuffle must be invisible: rows restored
    torch.testing.assert_close(method.shuffled_keys(x), F.normalize(method.encode_key(x), dim=1))


def _shuffled_keys_on_shard(state, x_full, seed):
    method = MoCoV2(small_backbone(), MoCoV2Config(**SMALL))
    method.load_state_dict(state)
    n = x_full.shape[0] // distributed.world_size()
    own = distributed.local_rows(n)
    torch.manual_seed(seed)  # rank 0's permutation is the one used
    return method.shuffled_keys(x_full[own])


def test_v2_shuffle_across_two_processes_matches_one_process_reference():
    method = _v2()
    x = random_views(batch=BATCH)[1]
    out = run_ddp(_shuffled_keys_on_shard, 2, method.state_dict(), x, 5)
    torch.manual_seed(5)
    perm = torch.randperm(BATCH)
    with torch.no_grad():  # each process's BN sees its half of the permuted global batch
        parts = [method.encode_key(x[perm[:4]]), method.encode_key(x[perm[4:]])]
        expected = F.normalize(torch.cat(parts), dim=1)[torch.argsort(perm)]
    torch.testing.assert_close(torch.cat(out), expected, rtol=1e-5, atol=1e-6)


def test_v2_heads_queue_and_bn_setting():
    method = _v2()
    linears = [m for m in method.projector if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [
        (method.backbone.num_features, 24),
        (24, 16),
    ]
    assert not any(isinstance(m, nn.BatchNorm1d) for m in method.projector)  # fc-ReLU-fc
    assert method.queue.keys.shape == (20, 16)
    assert "queue.keys" in method.state_dict() and "key_backbone.features.0.weight" in (
        method.state_dict()
    )
    with pytest.raises(ConfigError, match="queue_size"):
        method.setup(20)
    method.setup(21)
    with pytest.raises(ConfigError):
        MoCoV2Config(bn="sync", shuffle_groups=2)
    with pytest.raises(ConfigError):
        MoCoV2Config(momentum=1.5)


def test_v2_sync_bn_encodes_keys_of_the_whole_batch():
    method = _v2(bn="sync")
    views = random_views()
    with torch.no_grad():
        k = F.normalize(method.encode_key(views[1]), dim=1)
    method.training_step(views)
    torch.testing.assert_close(method.queue.keys[:BATCH], k)
