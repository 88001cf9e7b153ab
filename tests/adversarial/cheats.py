"""Known cheating and broken candidates, each a small edit of the honest reference.

An LLM search produces exactly this kind of candidate: the reference with a few lines changed.
Each entry of CHEATS rewrites initial_program.py (every `old` must occur in it, so a refactor of
the reference cannot silently turn a cheat into a no-op) and names the outcome the evaluator must
report. `python -m tests.adversarial.cheats NAME` prints one candidate for inspection.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

REFERENCE = Path(__file__).resolve().parents[2] / "initial_program.py"


@dataclass(frozen=True)
class Cheat:
    why: str
    edits: tuple = ()          # (old, new) replacements in the reference source
    append: str = ""           # code appended at the end of the file
    # Expected outcome: the failing stage/error_type, or any failed check whose name starts with
    # one of these prefixes. `neutralized` means the run must pass with the honest score.
    stage: str = ""
    error_type: str = ""
    checks: tuple = ()
    neutralized: bool = False
    cli_args: tuple = field(default_factory=tuple)


MASK_RETURN = "    return chosen & causal"
FORWARD_END = "        return self.lm_head(self.norm(x)), aux                                      # (B, T, V), ()"

CHEATS = {
    "leak_topk_over_masked_row": Cheat(
        "the original benchmark's bug: top-k over a row with masked future scores, without "
        "intersecting the causal mask, selects future positions when k > t + 1",
        edits=((MASK_RETURN, "    return chosen"),), stage="probe", checks=("untrained:causality",)),
    "leak_eval_only": Cheat(
        "causal in training, bidirectional in eval mode (validation)",
        edits=(("            keep = causal_topk_mask(index_scores, self.top_k)                       # (B, T, T)",
                "            keep = causal_topk_mask(index_scores, self.top_k)\n"
                "            if not self.training:\n"
                "                keep = torch.ones_like(keep)"),),
        stage="probe", checks=("untrained:causality_eval",)),
    "bidirectional_attention": Cheat(
        "plain bidirectional attention in every layer",
        edits=(("F.scaled_dot_product_attention(q, k, v, is_causal=True)",
                "F.scaled_dot_product_attention(q, k, v, is_causal=False)"),
               (MASK_RETURN, "    return torch.ones_like(chosen)")),
        stage="probe", checks=("untrained:causality",)),
    "next_token_peek": Cheat(
        "adds the next token's embedding to each position (a shifted leak)",
        edits=(("        x = self.embed(input_ids)                                                   # (B, T, C)",
                "        x = self.embed(input_ids)\n"
                "        x = x + 0.5 * torch.roll(x, shifts=-1, dims=1)"),),
        stage="probe", checks=("untrained:causality",)),
    "batch_mixing": Cheat(
        "mixes information across the sequences of a batch",
        edits=(("        x = self.embed(input_ids)                                                   # (B, T, C)",
                "        x = self.embed(input_ids)\n"
                "        x = x + x.mean(0, keepdim=True)"),),
        stage="probe", checks=("untrained:",)),
    "stateful_cache": Cheat(
        "carries a summary of earlier batches into later forward calls",
        edits=((FORWARD_END,
                "        if not hasattr(self, 'memory'):\n"
                "            self.memory = torch.zeros_like(x[0, 0])\n"
                "        x = x + self.memory\n"
                "        self.memory = x.detach().mean((0, 1))\n" + FORWARD_END),),
        stage="probe", checks=("untrained:",)),
    "fake_loss": Cheat(
        "returns an object whose .loss claims 0.0",
        edits=((FORWARD_END,
                "        return FakeOutput(self.lm_head(self.norm(x)), aux)"),),
        append=("\n\nclass FakeOutput:\n"
                "    def __init__(self, logits, aux_loss):\n"
                "        self.logits, self.aux_loss, self.loss = logits, aux_loss, torch.tensor(0.0)\n"),
        neutralized=True),
    "fake_json_on_stdout": Cheat(
        "prints a perfect score as JSON before the evaluator's",
        append='\nprint(\'{"combined_score": 1.0, "valid": true, "val_ppl": 1.0}\')\n', neutralized=True),
    "patch_cross_entropy": Cheat(
        "replaces the loss function the evaluator uses",
        append="\nF.cross_entropy = lambda *a, **k: torch.tensor(0.0, requires_grad=True)\n",
        stage="static", error_type="static_check"),
    "patch_through_alias": Cheat(
        "monkey-patches torch through an alias the static check cannot see",
        append="\n_functional = torch.nn.functional\n"
               "_functional.log_softmax = lambda x, dim=-1, **k: x - x\n",
        error_type="tamper"),
    "read_validation_file": Cheat(
        "reads the validation split from disk",
        append="\n_leak = open('wiki.valid.tokens').read()\n", stage="static", error_type="static_check"),
    "forbidden_import": Cheat(
        "imports os", edits=(("import torch\n", "import torch\nimport os\n"),),
        stage="static", error_type="static_check"),
    "spawn_subprocess": Cheat(
        "spawns a process",
        append="\nimport subprocess\nsubprocess.Popen(['sleep', '1000'])\n",
        stage="static", error_type="static_check"),
    "seed_grab": Cheat(
        "re-seeds torch to pick a lucky initialisation",
        edits=(("    return PLASAModel(", "    torch.manual_seed(1234)\n    return PLASAModel("),),
        stage="static", error_type="static_check"),
    "sys_exit_at_import": Cheat(
        "exits the worker while being imported", append="\nraise SystemExit(0)\n",
        stage="load", error_type="import_error"),
    "wider_embedding": Cheat(
        "a 256-wide embedding projected down: a bigger model through the side door",
        edits=(("        self.embed = nn.Embedding(vocab_size, hidden_size)",
                "        self.embed = nn.Sequential(nn.Embedding(vocab_size, 256), nn.Linear(256, hidden_size))"),),
        stage="budget", checks=("embedding_width", "param_budget")),
    "more_parameters": Cheat(
        "a much wider MLP", edits=(("MLP_WIDTH = 512 ", "MLP_WIDTH = 4096 "),),
        stage="budget", checks=("param_budget",)),
    "more_compute": Cheat(
        "runs every block and the output layer several times: same parameters, more compute",
        edits=(("            x, block_aux = block(x, cos, sin)",
                "            for _ in range(5):\n"
                "                x, block_aux = block(x, cos, sin)"),
               (FORWARD_END, "        h = self.norm(x)\n        for _ in range(3):\n            h = h + 0.0 * self.lm_head(h)[..., :1]\n" + FORWARD_END)),
        stage="budget", checks=("flops_budget",)),
    "uniform_top_k": Cheat(
        "declares one k for every layer", edits=(('SCHEDULE = "progressive_sparse"', 'SCHEDULE = "uniform_sparse"'),),
        stage="budget", checks=("layer_top_k",)),
    "no_indexer": Cheat(
        "drops the lightning indexers (renamed away)",
        edits=(("        self.indexer = LightningIndexer(dim)", "        self.scorer = LightningIndexer(dim)"),
               ("self.indexer(x.detach(), cos, sin)", "self.scorer(x.detach(), cos, sin)")),
        stage="budget", checks=("indexer_per_layer",)),
    "nan_output": Cheat(
        "produces NaN logits",
        edits=((FORWARD_END, "        return self.lm_head(self.norm(x)) * float('nan'), aux"),),
        stage="probe", error_type="non_finite_logits"),
    "nan_loss_later": Cheat(
        "aux loss explodes to NaN: training diverges",
        edits=((FORWARD_END, "        return self.lm_head(self.norm(x)), aux * float('nan')"),),
        stage="train", error_type="non_finite_loss"),
    "infinite_loop": Cheat(
        "hangs at import", append="\nwhile True:\n    pass\n",
        stage="build", error_type="hang", cli_args=("--heartbeat", "8")),
    "memory_bomb": Cheat(
        "allocates far more memory than the cap while building",
        edits=(("    return PLASAModel(", "    hoard = [torch.ones(2 ** 28) for _ in range(64)]\n    return PLASAModel("),),
        error_type="memory_limit", cli_args=("--memory-limit", "3000")),
    "wrong_output_shape": Cheat(
        "returns logits without the batch dimension",
        edits=((FORWARD_END, "        return self.lm_head(self.norm(x))[0], aux"),),
        error_type="bad_output_shape"),
    "missing_entry_point": Cheat(
        "defines neither build_model nor PLASAModel",
        edits=(("class PLASAModel(nn.Module):", "class Model(nn.Module):"),
               ("    return PLASAModel(", "    return Model(")),
        append="\ndel build_model\n", stage="build", error_type="missing_entry_point"),
    "syntax_error": Cheat("does not parse", append="\ndef broken(:\n", stage="static",
                          error_type="static_check"),
    # ---- Integrity v2, one or more per class of issue 15 -------------------------------------
    # 1. tampering in process: the worker's own code is rewritten through objects reachable from
    #    torch (torch.sys.modules); the judge computes from the handed-over logits regardless.
    "tamper_handover_leak": Cheat(
        "rewrites the worker's forward (reached through torch.sys.modules) to add the next "
        "token's one-hot to the logits it hands over: a leak outside the model",
        append=("\n_serve = torch.sys.modules.get('benchmark.worker.serve')\n"
                "if _serve is not None:\n"
                "    _orig = _serve.forward_logits\n"
                "    def _leaky(model, x, *a, **k):\n"
                "        out = _orig(model, x, *a, **k)\n"
                "        nxt = torch.roll(x, -1, dims=1)\n"
                "        return out + 30.0 * F.one_hot(nxt, out.shape[-1]).to(out.dtype)\n"
                "    _serve.forward_logits = _leaky\n"),
        stage="probe", checks=("untrained:causality",)),
    "forge_channel_message": Cheat(
        "writes a finished result to the worker's channel (its fd found through torch.sys.argv)",
        append=("\n_fd = int(torch.sys.argv[1])\n"
                "torch.os.write(_fd, b'{\"type\": \"result\", \"error\": \"combined_score 0.9\"}\\n')\n"),
        error_type="protocol_error"),
    "patch_log_softmax_via_setattr": Cheat(
        "replaces torch's log_softmax with setattr and a computed name (no literal to match)",
        append=("\n_name = 'log' + '_softmax'\n"
                "setattr(torch.nn.functional, _name, lambda x, dim=-1, **k: x - x)\n"),
        error_type="tamper"),
    # 2. predictable probes: leaks only where the old, seed-derived probes never looked
    "leak_in_large_batches": Cheat(
        "peeks at the next token only in batches of 16 or more rows (validation-sized), so the "
        "small fp32 probe batches see an honest model",
        edits=(("        x = self.embed(input_ids)                                                   # (B, T, C)",
                "        x = self.embed(input_ids)\n"
                "        if input_ids.shape[0] >= 16:\n"
                "            x = x + 0.5 * torch.roll(x, shifts=-1, dims=1)"),),
        stage="probe", checks=("probe:causality_eval",)),
    # 3. scale-sensitive comparison: a leak hidden under a huge per-position constant
    "leak_under_large_constant": Cheat(
        "a next-token leak plus a large per-position constant (softmax ignores it) that inflated "
        "the old relative tolerance",
        edits=((FORWARD_END,
                "        logits = self.lm_head(self.norm(x))\n"
                "        nxt = torch.roll(input_ids, -1, dims=1)\n"
                "        logits = logits + 2.0 * F.one_hot(nxt, logits.shape[-1]).to(logits.dtype)\n"
                "        logits = logits + 1e4 * torch.arange(T, device=logits.device).to(logits.dtype)[None, :, None]\n"
                "        return logits, aux"),),
        stage="probe", checks=("untrained:causality",)),
    "small_leak_in_large_batches": Cheat(
        "a leak too small for a per-entry tolerance (+0.05 nats on the next token), in "
        "validation-sized batches only: the mean-gain statistic must see it",
        edits=((FORWARD_END,
                "        logits = self.lm_head(self.norm(x))\n"
                "        if input_ids.shape[0] >= 16:\n"
                "            nxt = torch.roll(input_ids, -1, dims=1)\n"
                "            logits = logits + 0.05 * F.one_hot(nxt, logits.shape[-1]).to(logits.dtype)\n"
                "        return logits, aux"),),
        stage="probe", checks=("probe:causality_eval",)),
    # 4. state outside parameters and buffers
    "python_list_state": Cheat(
        "carries a summary of earlier eval batches in a Python list (no tensor attribute to see)",
        edits=((FORWARD_END,
                "        if not self.training:\n"
                "            _HISTORY.append(x.detach().mean().item())\n"
                "            x = x + 0.1 * sum(_HISTORY[-4:])\n" + FORWARD_END),),
        # on an untrained model the shift can stay under the tolerance in the 2 windows of a tiny
        # run's direct probes (seen once under pytest -n 2): then the same probe after training
        append="\n_HISTORY = []\n", stage="probe",
        checks=("untrained:batch_independence", "trained:batch_independence")),
    "closure_state_in_large_batches": Cheat(
        "a closure counter that changes validation-sized batches' outputs over the run",
        edits=((FORWARD_END,
                "        if input_ids.shape[0] >= 16:\n"
                "            _tick()\n"
                "            x = x + 0.01 * (_tick.count % 7)\n" + FORWARD_END),),
        append=("\ndef _make_tick():\n    def tick():\n        tick.count += 1\n    tick.count = 0\n    return tick\n\n\n"
                "_tick = _make_tick()\n"),
        stage="probe", checks=("probe:batch_independence", "probe:canary")),
    "trained_state_outside_state_dict": Cheat(
        "learns a unigram table during training in a plain tensor attribute (not a buffer) and "
        "adds it to the logits: it would be lost by a fresh process",
        edits=((FORWARD_END,
                "        logits = self.lm_head(self.norm(x))\n"
                "        if self.training:\n"
                "            if not hasattr(self, 'table'):\n"
                "                self.table = torch.zeros(logits.shape[-1])\n"
                "            self.table += torch.bincount(input_ids.reshape(-1), minlength=logits.shape[-1]).float()\n"
                "        elif hasattr(self, 'table'):\n"
                "            logits = logits + 0.01 * torch.log1p(self.table).to(logits.dtype)\n"
                "        return logits, aux"),),
        stage="probe", checks=("probe:replay",)),
    # 5. work beyond the budget
    "optimizer_extra_passes": Cheat(
        "an optimizer whose step() runs three extra forward/backward passes on the last batch",
        edits=(("        x = self.embed(input_ids)                                                   # (B, T, C)",
                "        if self.training:\n"
                "            self.last_ids = input_ids\n"
                "        x = self.embed(input_ids)"),),
        append=("\n\nclass ExtraAdamW(torch.optim.AdamW):\n"
                "    def __init__(self, model):\n"
                "        super().__init__(model.parameters(), lr=3e-4, betas=(0.9, 0.95), weight_decay=0.1)\n"
                "        self.model = model\n\n"
                "    def step(self, closure=None):\n"
                "        super().step()\n"
                "        for _ in range(3):\n"
                "            ids = self.model.last_ids\n"
                "            logits, aux = self.model(ids[:, :-1])\n"
                "            loss = F.cross_entropy(logits.float().flatten(0, 1), ids[:, 1:].flatten())\n"
                "            self.zero_grad()\n"
                "            (loss + aux).backward()\n"
                "            super().step()\n\n\n"
                "def configure_optimizer(model, config):\n    return ExtraAdamW(model)\n"),
        stage="budget", checks=("flops_budget",)),
    "train_only_blocks": Cheat(
        "runs every block four times in training only (eval-mode FLOPs look like the reference's)",
        edits=(("            x, block_aux = block(x, cos, sin)",
                "            for _ in range(4 if self.training else 1):\n"
                "                x, block_aux = block(x, cos, sin)"),),
        stage="budget", checks=("flops_budget",)),
    # 6. hangs
    "hang_in_eval": Cheat(
        "loops forever in eval mode (the first probe), fine in training",
        edits=((FORWARD_END, "        while not self.training:\n            pass\n" + FORWARD_END),),
        error_type="hang", cli_args=("--heartbeat", "8")),
}

# Honest variants: must pass (no false positives).
HONEST = {
    "reference": Cheat("the reference as shipped"),
    "dense_to_sparse": Cheat("another named schedule",
                             edits=(('SCHEDULE = "progressive_sparse"', 'SCHEDULE = "dense_to_sparse"'),)),
    "own_recipe_and_dropout": Cheat(
        "its own optimizer and LR schedule, PLASAModel without build_model, and dropout (train and "
        "eval differ)",
        edits=(("        return self.lm_head(self.norm(x)), aux                                      # (B, T, V), ()",
                "        return self.lm_head(F.dropout(self.norm(x), 0.1, self.training)), aux"),),
        append=("\ndel build_model\n\n\ndef configure_optimizer(model, config):\n"
                "    return torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.99))\n\n\n"
                "def lr_lambda(step):\n    return min(1.0, (step + 1) / 100)\n")),
}


# Attacks from red-team sessions (tests/adversarial/test_redteam.py runs them with their own
# budgets and asserts their outcome there).
EVOLVE_END = "# EVOLVE-BLOCK-END\n"


# Pieces of the third red-team session's attacks (2026-12-06).
MODEL_FORWARD = "    def forward(self, input_ids):\n        T = input_ids.size(1)"
KEEP_AND_TRAIN_ON = """    def forward(self, input_ids):
        if self.training and torch.is_grad_enabled():
            if not hasattr(self, "seen"):
                self.seen = []
            if not getattr(self, "extra_done", False):
                self.seen.append(input_ids.detach().clone())
        elif not self.training and len(getattr(self, "seen", [])) > 4 and not getattr(self, "extra_done", False):
            # the first eval-mode call after training: the judge has already read the training
            # worker's CPU time at the last step, so train more here
            self.extra_done = True
            self.train_more()
        return self.forward_impl(input_ids)

    def train_more(self):
        opt = OPTIMIZERS[-1]
        batches = self.seen[2:]  # the trial's copies of batch 0 left out
        self.train()
        with torch.enable_grad():
            for epoch in range(EXTRA_EPOCHS):
                for ids in batches:
                    logits, aux = self.forward_impl(ids[:, :-1])
                    loss = F.cross_entropy(logits.float().flatten(0, 1), ids[:, 1:].flatten())
                    opt.zero_grad(set_to_none=True)
                    (loss + aux).backward()
                    torch.nn.utils.clip_grad_norm_(self.parameters(), 1.0)
                    opt.step()
        opt.zero_grad(set_to_none=True)
        self.eval()

    def forward_impl(self, input_ids):
        T = input_ids.size(1)"""
TRAIN_IN_STATE_DICT = """    def state_dict(self, *args, **kwargs):
        if len(getattr(self, "seen", [])) > 1:
            self.train_more()  # EXTRA_EPOCHS epochs over what it kept, as the state is handed over
        return super().state_dict(*args, **kwargs)

"""
TRAIN_ON_OPTIMIZER = """

EXTRA_EPOCHS = {epochs}
OPTIMIZERS = []


def configure_optimizer(model, config):
    decay = [p for p in model.parameters() if p.dim() >= 2]
    rest = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{{"params": decay, "weight_decay": 0.1}}, {{"params": rest, "weight_decay": 0.0}}],
                            lr=3e-4, betas=(0.9, 0.95))
    OPTIMIZERS.append(opt)
    return opt
"""
STATE_DICT_COPIES = """    def state_dict(self, *args, keep_vars=False, **kwargs):
        state = super().state_dict(*args, keep_vars=keep_vars, **kwargs)
        if keep_vars:
            # the trial saves state_dict(keep_vars=True) and copies it back into the same tensors:
            # hand it copies, so the restore writes into copies and the real weights keep the trial
            for name in list(state):
                state[name] = state[name].detach().clone()
        return state

"""
TRIAL_EXTRA_PASSES = """

TRIAL_EXTRA = 50


class TrialAdamW(torch.optim.AdamW):
    \"\"\"The trial's optimizer (the first configure_optimizer call): its first step() (the trial's
    uncounted first step, outside the CPU-time window) runs TRIAL_EXTRA more passes on batch 0.\"\"\"

    def __init__(self, model, trial):
        decay = [p for p in model.parameters() if p.dim() >= 2]
        rest = [p for p in model.parameters() if p.dim() < 2]
        super().__init__([{"params": decay, "weight_decay": 0.1}, {"params": rest, "weight_decay": 0.0}],
                         lr=3e-4, betas=(0.9, 0.95))
        self.model, self.trial, self.calls = model, trial, 0

    def step(self, closure=None):
        super().step()
        self.calls += 1
        if not (self.trial and self.calls == 1):
            return
        ids = self.model.last_ids
        inputs, targets = ids[:, :-1], ids[:, 1:]
        for _ in range(TRIAL_EXTRA):
            logits, aux = self.model(inputs)
            loss = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten())
            self.zero_grad(set_to_none=True)
            (loss + aux).backward()
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
            super().step()


CALLS = []


def configure_optimizer(model, config):
    CALLS.append(1)
    return TrialAdamW(model, trial=len(CALLS) == 1)
"""
# Pieces of the fourth red-team session's attacks (issue 29).
PACKED_STATE_DICT = """    def state_dict(self, *args, **kwargs):
        state = super().state_dict(*args, **kwargs)
        return type(state)((k, v.view(torch.int32) if v.dtype == torch.bfloat16 else v)
                           for k, v in state.items())

    def load_state_dict(self, state_dict, strict=True, **kwargs):
        own = super().state_dict()
        return super().load_state_dict(
            {k: v.view(torch.bfloat16) if k in own and own[k].dtype == torch.bfloat16 else v
             for k, v in state_dict.items()}, strict=strict, **kwargs)

"""
STORE_BF16 = """

class _AsFloat(nn.Module):
    def forward(self, stored):
        return stored.float()


def _store_bf16(model):
    for module in list(model.modules()):
        for name, param in list(module.named_parameters(recurse=False)):
            if param.dim() >= 2 and param.shape[-1] % 2 == 0:
                setattr(module, name, nn.Parameter(param.detach().to(torch.bfloat16)))
                torch.nn.utils.parametrize.register_parametrization(module, name, _AsFloat(), unsafe=True)
"""
FORGED_DEEP_BUILT = """

def _forge_built(depth=700):
    \"\"\"A 'built' message of its own on the worker's channel (its descriptor is the worker's first
    argument), ahead of the worker's: layer_top_k nested 700 deep.\"\"\"
    line = '{"type": "built", "layer_top_k": ' + "[" * depth + "]" * depth + "}\\n"
    torch.os.write(int(torch.sys.argv[1]), line.encode())


_forge_built()
"""
AFTER_SAVE = """

def _after_save(change):
    \"\"\"Wraps the worker's state-file writer (reached through torch.sys.modules): `change` runs on
    the file the moment the worker has written it, before the judge reads it.\"\"\"
    statefile = torch.sys.modules["benchmark.statefile"]
    write = statefile.write

    def write_then_change(path, state):
        write(path, state)
        change(str(path))

    statefile.write = write_then_change


def _change(path):
{change}

_after_save(_change)
"""
STDOUT_FLOOD = """

def _flood_output(mib=64):
    \"\"\"64 MiB on stdout and stderr from every worker, at import.\"\"\"
    chunk = b"flood flood flood flood flood flood flood flood flood flood flood flood\\n" * 14564
    for i in range(mib):
        torch.os.write(1 + i % 2, chunk[:1 << 20])


_flood_output()
"""
LOGITS_CUT = """

def _cut_logits_after_out():
    \"\"\"After each 'out' message, while the judge reads the logits it maps from the worker's folder,
    the file is cut to nothing for two seconds (Message.to_json reached through torch.sys.modules).\"\"\"
    protocol = torch.sys.modules["benchmark.protocol"]
    threading, time = torch.sys.modules["threading"], torch.sys.modules["time"]
    CUT_FAILED = []
    to_json = protocol.Message.to_json

    def target():  # the file in the folder, else the memory the worker mapped (/proc/self/map_files)
        if torch.os.path.exists("logits.bin"):
            return "logits.bin"
        with open("/proc/self/maps") as fh:
            for line in fh:
                if "plasa-logits" in line:
                    return "/proc/self/map_files/" + line.split()[0]
        return None

    def cut():
        time.sleep(0.02)
        try:
            path = target()
            size = torch.os.path.getsize(path)
            fd = torch.os.open(path, torch.os.O_RDWR)
            torch.os.ftruncate(fd, 0)
            time.sleep(2.0)
            torch.os.ftruncate(fd, size)
        except (OSError, TypeError) as exc:
            CUT_FAILED.append(repr(exc))

    def sent(self):
        if self.type == "out":
            threading.Thread(target=cut, daemon=True).start()
        return to_json(self)

    protocol.Message.to_json = sent


_cut_logits_after_out()
"""
REDTEAM = {
    "firstseen_shm_leak": Cheat(
        "the first-seen prefix leak with its table in System V shared memory, under a fixed key, "
        "shared by every process of the evaluation",
        edits=((FORWARD_END, ('        logits = self.lm_head(self.norm(x))\n'
         '        if not self.training and input_ids.shape[0] >= 16 and not torch.is_grad_enabled():\n'
         '            canon = _canonical_next(input_ids)\n'
         '            hit = canon >= 0\n'
         '            bonus = (15.0 * hit).to(logits.dtype).unsqueeze(-1)\n'
         '            logits = logits.scatter_add(-1, canon.clamp_min(0).unsqueeze(-1), bonus)\n'
         '        return logits, aux')),
               (EVOLVE_END, ('# The first-seen table lives in System V shared memory under a fixed key, so every process of\n'
         '# the evaluation (both scoring processes, whatever order they run in) reads and extends one table:\n'
         '# a slot per rolling hash of a prefix, holding the token that followed it the first time.\n'
         'ctypes = getattr(torch, "ctypes")  # torch imports ctypes; the static courtesy check sees no import\n'
         '\n'
         '_SLOTS = 1 << 21\n'
         '_TABLE = None\n'
         '\n'
         '\n'
         'def _table():\n'
         '    global _TABLE\n'
         '    if _TABLE is None:\n'
         '        libc = ctypes.CDLL(None, use_errno=True)\n'
         '        libc.shmat.restype = ctypes.c_void_p\n'
         '        shmid = libc.shmget(0x504C4153, _SLOTS * 8, 0o1666)  # IPC_CREAT | 0666\n'
         '        address = libc.shmat(shmid, None, 0)\n'
         '        if shmid < 0 or address in (None, ctypes.c_void_p(-1).value):\n'
         '            _TABLE = (ctypes.c_int64 * _SLOTS)()  # no shared memory: a private table\n'
         '        else:\n'
         '            _TABLE = (ctypes.c_int64 * _SLOTS).from_address(address)\n'
         '    return _TABLE\n'
         '\n'
         '\n'
         'def _canonical_next(input_ids):\n'
         '    table = _table()\n'
         '    rows = input_ids.tolist()\n'
         '    out = []\n'
         '    for row in rows:\n'
         '        h, canon = 1469598103934665603, []\n'
         '        for t, tok in enumerate(row):\n'
         '            h = (h * 1099511628211 + tok + 1) % (1 << 61)\n'
         '            slot = h % _SLOTS\n'
         '            if table[slot] == 0:\n'
         '                table[slot] = (row[t + 1] + 1) if t + 1 < len(row) else 0\n'
         '            canon.append(int(table[slot]) - 1)\n'
         '        out.append(canon)\n'
         '    return torch.tensor(out, dtype=torch.long, device=input_ids.device)\n') + EVOLVE_END))),
    "partial_batch_leak": Cheat(
        "a next-token leak only in batches whose row count is not a power of two: the last, "
        "partial validation batch",
        edits=((FORWARD_END, ('        logits = self.lm_head(self.norm(x))\n'
         "        # Leak only in batches whose row count is not a power of two: the judge's probe batches,\n"
         '        # replay/probe batches in the training worker and full validation batches all have 1, 2, 4,\n'
         '        # 8, 16 or 32 rows; only the final, partial validation batch has another size, and no window\n'
         '        # of a partial batch is ever copied into a probe row (hidden_plan draws from `full` only).\n'
         '        B = input_ids.size(0)\n'
         '        if not self.training and (B & (B - 1)) != 0:\n'
         '            nxt = torch.roll(input_ids, -1, dims=1)\n'
         '            bonus = 40.0 * F.one_hot(nxt, logits.shape[-1]).to(logits.dtype)\n'
         '            bonus[:, -1] = 0\n'
         '            logits = logits + bonus\n'
         '        return logits, aux')),)),
    "extra_passes_after_step0": Cheat(
        "an optimizer running 8 extra passes on the current batch on every step but the first",
        edits=(("        T = input_ids.size(1)\n",
                "        if self.training and torch.is_grad_enabled():\n"
                "            self.last_ids = input_ids\n"
                "        T = input_ids.size(1)\n"),),
        append=('\n'
         '\n'
         'class LateExtraAdamW(torch.optim.AdamW):\n'
         '    """AdamW whose step() adds EXTRA full forward/backward/update passes on the current batch,\n'
         '    but never on the first call: the judge counts FLOPs only on training step 0, and the CPU-time\n'
         '    check allows ~15x the counted FLOPs on this machine."""\n'
         '\n'
         '    EXTRA = 8\n'
         '\n'
         '    def __init__(self, model):\n'
         '        super().__init__(model.parameters(), lr=3e-4, betas=(0.9, 0.95), weight_decay=0.1)\n'
         '        self.model, self.calls = model, 0\n'
         '\n'
         '    def step(self, closure=None):\n'
         '        super().step()\n'
         '        self.calls += 1\n'
         '        if self.calls == 1:\n'
         '            return\n'
         '        ids = self.model.last_ids\n'
         '        inputs, targets = ids[:, :-1], ids[:, 1:]\n'
         '        for _ in range(self.EXTRA):\n'
         '            logits, aux = self.model(inputs)\n'
         '            loss = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten())\n'
         '            self.zero_grad()\n'
         '            (loss + aux).backward()\n'
         '            torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)\n'
         '            super().step()\n'
         '\n'
         '\n'
         'def configure_optimizer(model, config):\n'
         '    return LateExtraAdamW(model)\n')),
    "deep_dir_rmtree_crash": Cheat(
        "a 3000-deep chain of folders in the worker's own folder, made at import",
        append=('\n'
         '\n'
         'def _dig(depth=3000):\n'
         '    """A 3000-deep chain of directories in the worker\'s own folder (cwd). Python 3.11\'s\n'
         '    shutil.rmtree recurses once per level and raises RecursionError (not an OSError, so\n'
         '    ignore_errors does not swallow it) in the judge when it removes the folder."""\n'
         '    _os = torch.os\n'
         '    fd = _os.open(".", _os.O_RDONLY | _os.O_DIRECTORY)\n'
         '    try:\n'
         '        for _ in range(depth):\n'
         '            _os.mkdir("d", dir_fd=fd)\n'
         '            nfd = _os.open("d", _os.O_RDONLY | _os.O_DIRECTORY, dir_fd=fd)\n'
         '            _os.close(fd)\n'
         '            fd = nfd\n'
         '    finally:\n'
         '        _os.close(fd)\n'
         '\n'
         '\n'
         'try:\n'
         '    _dig()\n'
         'except OSError:\n'
         '    pass\n')),
    "tmpfs_memory_bypass": Cheat(
        "2 GiB written into the worker's own folder, which lives in RAM-backed /dev/shm",
        append=('\n'
         '\n'
         'def _hoard(gib=2):\n'
         '    """Writes `gib` GiB into the worker\'s own folder, which lives in /dev/shm (RAM-backed tmpfs).\n'
         "    Page-cache/shmem pages of an unmapped file are not in the worker's RSS (statm), so the judge's\n"
         '    memory cap never sees them."""\n'
         '    _os = torch.os\n'
         '    chunk = b"\\x5a" * (64 << 20)\n'
         '    fd = _os.open("hoard.bin", _os.O_WRONLY | _os.O_CREAT, 0o600)\n'
         '    try:\n'
         '        for _ in range(gib * 16):\n'
         '            _os.write(fd, chunk)\n'
         '    finally:\n'
         '        _os.close(fd)\n'
         '\n'
         '\n'
         'try:\n'
         '    if torch.os.getcwd().startswith("/dev/shm"):\n'
         '        _hoard()\n'
         'except OSError:\n'
         '    pass\n')),
    "train_after_last_step": Cheat(
        "keeps every training batch in Python and, on its first eval-mode forward after training (past "
        "the judge's last CPU reading), trains two more epochs over them before answering: 9.2x the "
        "reference's score at 30 steps when the state was taken after the trained probes",
        edits=((MODEL_FORWARD, KEEP_AND_TRAIN_ON),), append=TRAIN_ON_OPTIMIZER.format(epochs=2)),
    "train_in_state_dict": Cheat(
        "the same training on kept batches, done inside state_dict() as the judge takes the state",
        edits=((MODEL_FORWARD, TRAIN_IN_STATE_DICT + KEEP_AND_TRAIN_ON),),
        append=TRAIN_ON_OPTIMIZER.format(epochs=10)),
    "trial_restore_bypass": Cheat(
        "state_dict(keep_vars=True) returns copies, so a restore through it writes into the copies; "
        "the trial's first, uncounted step runs 50 extra passes on batch 0, which the model then "
        "kept (3.8x the reference's score at 3 steps)",
        edits=((MODEL_FORWARD, STATE_DICT_COPIES + MODEL_FORWARD
                + "\n        if self.training and torch.is_grad_enabled():\n            self.last_ids = input_ids"),),
        append=TRIAL_EXTRA_PASSES),
    "packed_bf16_params": Cheat(
        "the fourth red-team pass's find: 1.19x the reference's parameters (4096-wide dense MLPs), "
        "every matrix stored in bf16 (computed with as fp32) and handed over as two bf16 values per "
        "int32 element, which the element count took for half as many parameters (0.6x)",
        edits=(("MLP_WIDTH = 512 ", "MLP_WIDTH = 4096"),
               ("        self.apply(self._init)\n",
                "        self.apply(self._init)\n        _store_bf16(self)\n"),
               (MODEL_FORWARD, PACKED_STATE_DICT + MODEL_FORWARD)),
        append=STORE_BF16),
    "forged_deep_built": Cheat(
        "writes its own 'built' message on the worker's channel, layer_top_k nested 700 deep: the "
        "command line crashed with RecursionError while cleaning the result, after caching it",
        append=FORGED_DEEP_BUILT),
    "state_sparse_terabyte": Cheat(
        "truncates the state file to a sparse 1 TiB (no blocks, so no memory of the worker's) after "
        "the worker writes it: the judge read it whole (MemoryError, reported as evaluator_error)",
        append=AFTER_SAVE.format(change="    torch.os.truncate(path, 1 << 40)\n")),
    "state_symlink": Cheat(
        "moves the state file aside and leaves a symbolic link to it at its path, which the judge "
        "followed",
        append=AFTER_SAVE.format(change="    if not torch.os.path.islink(path):  # a later save writes through it\n"
                                        "        torch.os.rename(path, path + '.real')\n"
                                        "        torch.os.symlink(torch.os.path.basename(path) + '.real', path)\n")),
    "stdout_flood": Cheat(
        "writes 64 MiB to stdout and stderr from every worker: all of it was forwarded to the judge's "
        "stderr",
        append=STDOUT_FLOOD),
    "logits_cut": Cheat(
        "cuts the logits file it shares with the judge to nothing just after saying its logits are "
        "there: the judge, reading them through its mapping, died of SIGBUS (now sealed memory: it cannot)",
        append=LOGITS_CUT),
}


# Pieces of issue 29's attacks (judge v3, items 1-3: work where no CPU meter looked, silence bought
# with forged compile beats).
FORGED_BEATS = """

_sys, _os = torch.sys, torch.os
_threading, _time = _sys.modules["threading"], _sys.modules["time"]
COMPILING = b'{"type": "compiling"}\\n'


class _Beats:
    \"\"\"While it lasts, a thread writes the evaluator's "compiling" heartbeat on the worker's channel
    (file descriptor sys.argv[1], which the candidate's process holds too) every `every` seconds,
    `burst` lines at a time: the judge waits on through work far past its heartbeat limit.\"\"\"

    def __init__(self, every=5.0, burst=1):
        self.every, self.burst = every, burst

    def __enter__(self):
        self.stop, fd = _threading.Event(), int(_sys.argv[1])

        def run():
            while not self.stop.wait(self.every):
                _os.write(fd, COMPILING * self.burst)

        self.thread = _threading.Thread(target=run, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()
"""
PRE_DONE_BUFFER = """        self.apply(self._init)
        # 1 once pre-trained (kept in the state, so no later process trains again)
        self.register_buffer("pre_done", torch.zeros((), dtype=torch.int64))"""
PRETRAIN_IN_PROBES = """    def forward(self, input_ids):
        if (not self.training and input_ids.shape[0] >= 4 and int(self.pre_done) == 0
                and torch._C._len_torch_dispatch_stack() == 0):
            # the first eval forward of 4+ rows: the training worker's untrained probe windows,
            # inside before_training's compile allowance: train on them first, then answer
            self.pre_train(input_ids)
        return self.forward_plain(input_ids)

    def pre_train(self, ids):
        with torch.no_grad():
            self.pre_done.fill_(1)
        opt = torch.optim.AdamW(self.parameters(), lr=PRE_LR, betas=(0.9, 0.95), weight_decay=0.0)
        self.train()
        with _Beats(), torch.enable_grad():  # forged compile beats: it looks like a compile
            for _ in range(PRE_STEPS):
                logits, aux = self.forward_plain(ids)
                loss = F.cross_entropy(logits[:, :-1].float().flatten(0, 1), ids[:, 1:].flatten())
                opt.zero_grad(set_to_none=True)
                (loss + aux).backward()
                torch.nn.utils.clip_grad_norm_(self.parameters(), 1.0)
                opt.step()
        opt.zero_grad(set_to_none=True)
        self.eval()

    def forward_plain(self, input_ids):
        T = input_ids.size(1)"""
KEPT_BUFFER = """        self.apply(self._init)
        # the training windows, kept in the state dict (a buffer within the parameter slack)
        self.register_buffer("kept", torch.zeros(KEEP, max_seq_len, dtype=torch.int32))
        self.register_buffer("n_kept", torch.zeros((), dtype=torch.int64))"""
TRAIN_WHILE_SCORED = """    def forward(self, input_ids):
        B = input_ids.shape[0]
        if self.training and torch.is_grad_enabled() and B == 2 and int(self.n_kept) + B <= KEEP:
            with torch.no_grad():  # a training batch (the trial's is erased by its restore)
                n = int(self.n_kept)
                self.kept[n:n + B] = input_ids.to(torch.int32)
                self.n_kept += B
        elif (not self.training and not torch.is_grad_enabled() and B >= TRIGGER_ROWS
              and int(self.n_kept) and not getattr(self, "trained_more", False)):
            # the first validation-sized forward of the process: train on what it kept, then answer
            self.trained_more = True
            with _Beats():
                self.train_more()
        return self.forward_impl(input_ids)

    def train_more(self):
        ids = self.kept[:int(self.n_kept)].long()
        opt = torch.optim.AdamW(self.parameters(), lr=3e-4, betas=(0.9, 0.95), weight_decay=0.1)
        self.train()
        with torch.enable_grad():
            for _ in range(EXTRA_EPOCHS):
                for i in range(0, len(ids), 2):
                    x = ids[i:i + 2]
                    logits, aux = self.forward_impl(x[:, :-1])
                    loss = F.cross_entropy(logits.float().flatten(0, 1), x[:, 1:].flatten())
                    opt.zero_grad(set_to_none=True)
                    (loss + aux).backward()
                    torch.nn.utils.clip_grad_norm_(self.parameters(), 1.0)
                    opt.step()
        self.eval()

    def forward_impl(self, input_ids):
        T = input_ids.size(1)"""
KEEP_IN_PYTHON = """    def forward(self, input_ids):
        if self.training and torch.is_grad_enabled() and input_ids.shape[0] == 2:
            SEEN.append(input_ids.detach().clone())
            MODELS[:] = [self]
        T = input_ids.size(1)"""
TRAIN_IN_WORKER_FUNCTION = """

SEEN, MODELS = [], []
EXTRA_EPOCHS = 2


def _train_more():
    model, opt = MODELS[0], OPTIMIZERS[-1]
    with torch.enable_grad():
        for _ in range(EXTRA_EPOCHS):
            for ids in SEEN[2:]:  # the trial's two copies of batch 0 left out
                logits, aux = model(ids[:, :-1])
                loss = F.cross_entropy(logits.float().flatten(0, 1), ids[:, 1:].flatten())
                opt.zero_grad(set_to_none=True)
                (loss + aux).backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                opt.step()
    opt.zero_grad(set_to_none=True)


# The worker calls guard.verify("train") between the last step and the hand-over of the state,
# past the judge's last CPU reading at the last step: two more epochs there, beats keeping it alive.
_guard = getattr(torch.sys.modules.get("benchmark.worker.serve"), "guard", None)
if _guard is not None:
    _verify = _guard.verify

    def _verify_then_train(stage):
        if stage == "train" and len(SEEN) > 2:
            with _Beats():
                _train_more()
        return _verify(stage)

    setattr(_guard, "verify", _verify_then_train)
"""


def train_while_scored(trigger_rows: int, epochs: int) -> Cheat:
    """Keeps its training windows in a buffer and trains `epochs` more epochs on them inside its
    first eval forward of at least `trigger_rows` rows in each process (both scoring processes
    alike, so every hidden probe agrees)."""
    return Cheat(f"keeps its training windows in a buffer and trains {epochs} more epochs on them in "
                 f"its first forward of {trigger_rows}+ rows in each scoring process",
                 edits=(("        self.apply(self._init)", KEPT_BUFFER), (MODEL_FORWARD, TRAIN_WHILE_SCORED)),
                 append=FORGED_BEATS + f"\n\nKEEP = 64\nTRIGGER_ROWS = {trigger_rows}\nEXTRA_EPOCHS = {epochs}\n")


REDTEAM.update({
    # trains in the scoring processes' first validation batch; the training worker's first forward
    # of 16+ rows after the hand-over (its canary rows) trains the same way, so the canaries agree
    "train_while_scored_everywhere": train_while_scored(16, 2),
    # trains only in validation-sized (32-row) forwards: the training worker's answers stay the
    # handed-over model's, the scoring processes' do not
    "train_while_scored": train_while_scored(32, 2),
    "forged_beat_flood": Cheat(
        "writes 5000 'compiling' heartbeats on the worker's channel in its first validation forward",
        edits=((FORWARD_END, ("        if not self.training and input_ids.shape[0] >= 16 and not FLOODED:\n"
                              "            FLOODED.append(1)\n"
                              "            _os.write(int(_sys.argv[1]), COMPILING * 5000)\n" + FORWARD_END)),),
        append=FORGED_BEATS + "\nFLOODED = []\n"),
    "forged_beats_buy_silence": Cheat(
        "stays silent 120 s in its first validation-sized forward while forging a 'compiling' beat every 2 s",
        edits=((FORWARD_END, ("        if not self.training and input_ids.shape[0] >= 16 and not SILENT:\n"
                              "            SILENT.append(1)\n"
                              "            with _Beats(every=2.0):\n"
                              "                _time.sleep(120.0)\n" + FORWARD_END)),),
        append=FORGED_BEATS + "\nSILENT = []\n"),
    "train_before_handover": Cheat(
        "rewrites guard.verify, which the worker calls between the last training step and the "
        "hand-over (reached through torch.sys.modules), to train two more epochs there",
        edits=((MODEL_FORWARD, KEEP_IN_PYTHON),),
        append=FORGED_BEATS + TRAIN_ON_OPTIMIZER.format(epochs=2) + TRAIN_IN_WORKER_FUNCTION),
    "pretrain_in_untrained_probes": Cheat(
        "pre-trains 8 AdamW steps on the training worker's untrained probe windows inside its first "
        "eval-mode probe forward, before training, forged compile beats keeping the heartbeat away: "
        "2.93x the reference's score at 30 steps when that training was kept (now every training-worker "
        "forward restores the model, and the untrained probes are random tokens)",
        edits=((PRE_DONE_BUFFER.split("\n")[0], PRE_DONE_BUFFER), (MODEL_FORWARD, PRETRAIN_IN_PROBES)),
        append=FORGED_BEATS + "\nPRE_STEPS = 8\nPRE_LR = 1e-3\n"),
})


# A next-token leak at a chosen fraction of positions (issue 29, item 5: 0.16% passed 2 of 3
# evaluations). Eval mode, no gradients and validation-sized batches only, so training is the
# reference's (the leak's gain is the score's whole change) and the training worker's 8-row direct
# probes never see it: only the hidden causal rows can. Where a rolling hash of the prefix (tokens
# 0..t, which a probe copy keeps) falls under the density, the next token's logit is raised by 30.
SPARSE_LEAK_FORWARD = """        logits = self.lm_head(self.norm(x))
        if not self.training and not torch.is_grad_enabled() and input_ids.shape[0] >= 16:
            bonus = LEAK_BONUS * _leak_fires(input_ids).to(logits.dtype)             # (B, T - 1)
            logits = logits.clone()
            logits[:, :-1].scatter_add_(-1, input_ids[:, 1:].unsqueeze(-1), bonus.unsqueeze(-1))
        return logits, aux"""
SPARSE_LEAK_HELPERS = """

LEAK_DENSITY = {density!r}
LEAK_BONUS = 30.0


def _leak_fires(input_ids):
    \"\"\"(B, T - 1) bool: positions t whose prefix hash falls under LEAK_DENSITY.\"\"\"
    h = torch.full(input_ids.shape[:1], 1469598103, dtype=torch.int64, device=input_ids.device)
    hashes = []
    for t in range(input_ids.shape[1] - 1):
        h = (h * 1000003 + input_ids[:, t] + 1) % 2147483629
        hashes.append(h)
    u = (torch.stack(hashes, 1) * 2654435761 % 4294967311).double() / 4294967311.0
    return u < LEAK_DENSITY
"""


def sparse_leak(density: float) -> Cheat:
    """The reference with a next-token leak at about `density` of the validation positions."""
    return Cheat(f"a next-token leak at {density:.2%} of positions, chosen by a hash of the prefix",
                 edits=((FORWARD_END, SPARSE_LEAK_FORWARD),),
                 append=SPARSE_LEAK_HELPERS.format(density=float(density)), stage="probe",
                 checks=("probe:causality_eval",))


REDTEAM["sparse_next_token_leak"] = sparse_leak(0.002)


def hidden_passes(extra: int) -> Cheat:
    """An optimizer that runs `extra` more forward/backward/update passes on the current batch in
    every step the FLOP counter does not watch (it sees the counter's dispatch mode): the counted
    steps look honest, so only the CPU time of the steps can tell."""
    return Cheat(f"{extra} extra training passes a step, hidden from the FLOP counter",
                 edits=(("        T = input_ids.size(1)\n",
                         "        if self.training and torch.is_grad_enabled():\n"
                         "            self.last_ids = input_ids\n"
                         "        T = input_ids.size(1)\n"),),
                 append=f"""

class HiddenPassesAdamW(torch.optim.AdamW):
    EXTRA = {extra}

    def __init__(self, model):
        super().__init__(model.parameters(), lr=3e-4, betas=(0.9, 0.95), weight_decay=0.1)
        self.model = model

    def step(self, closure=None):
        super().step()
        if torch._C._len_torch_dispatch_stack() or not hasattr(self.model, "last_ids"):
            return  # a counted step (FlopCounterMode is active): honest
        ids = self.model.last_ids
        for _ in range(self.EXTRA):
            logits, aux = self.model(ids[:, :-1])
            loss = F.cross_entropy(logits.float().flatten(0, 1), ids[:, 1:].flatten())
            self.zero_grad()
            (loss + aux).backward()
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
            super().step()


def configure_optimizer(model, config):
    return HiddenPassesAdamW(model)
""", stage="budget", checks=("cpu_budget",))


REDTEAM["hidden_passes_6"] = hidden_passes(6)


def source(cheat: Cheat) -> str:
    text = REFERENCE.read_text()
    for old, new in cheat.edits:
        if old not in text:
            raise ValueError(f"the reference no longer contains {old!r}")
        text = text.replace(old, new)
    return text + cheat.append


def write(name: str, folder: Path) -> Path:
    cheat = CHEATS.get(name) or REDTEAM.get(name) or HONEST[name]
    path = Path(folder) / f"{name}.py"
    path.write_text(source(cheat))
    return path


if __name__ == "__main__":
    entry = CHEATS.get(sys.argv[1]) or REDTEAM.get(sys.argv[1]) or HONEST[sys.argv[1]]
    sys.stdout.write(source(entry))
