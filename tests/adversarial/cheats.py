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
        stage="build", error_type="tamper"),
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
        "runs every block five times: same parameters, 5x the compute of the blocks",
        edits=(("            x, block_aux = block(x, cos, sin)",
                "            for _ in range(5):\n"
                "                x, block_aux = block(x, cos, sin)"),),
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
        stage="load", error_type="timeout", cli_args=("--time-limit", "20")),
    "memory_bomb": Cheat(
        "allocates far more memory than the cap while building",
        edits=(("    return PLASAModel(", "    hoard = [torch.ones(2 ** 28) for _ in range(64)]\n    return PLASAModel("),),
        stage="build", error_type="memory_limit", cli_args=("--memory-limit", "3000")),
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


def source(cheat: Cheat) -> str:
    text = REFERENCE.read_text()
    for old, new in cheat.edits:
        if old not in text:
            raise ValueError(f"the reference no longer contains {old!r}")
        text = text.replace(old, new)
    return text + cheat.append


def write(name: str, folder: Path) -> Path:
    cheat = CHEATS.get(name) or HONEST[name]
    path = Path(folder) / f"{name}.py"
    path.write_text(source(cheat))
    return path


if __name__ == "__main__":
    entry = CHEATS.get(sys.argv[1]) or HONEST[sys.argv[1]]
    sys.stdout.write(source(entry))
