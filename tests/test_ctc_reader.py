"""The CTC reader of benchmarks/ctc_reader.py: its decoding and its loss, on a tiny model."""

import torch
from benchmarks.ctc_reader import BLANK, END, CTCReader

from digitformer.inference.readers import token_strings
from digitformer.models import Seq2SeqConfig

TINY = dict(image_size=28, image_width=56, max_digits=4, ending="end", patch_size=7, dim=32)
TINY |= dict(enc_depth=1, dec_depth=1, heads=2, ff_dim=64, memory="patches", window=2)


def test_steps_are_read_with_repeats_merged_and_blanks_dropped(monkeypatch):
    model = CTCReader(Seq2SeqConfig(**TINY))
    steps = [BLANK, 3, 3, BLANK, 3, 5, 5, BLANK]  # 8 columns x 2 steps = 16 steps, padded
    steps += [BLANK] * (16 - len(steps))
    logits = torch.full((1, 16, BLANK + 1), -5.0)
    logits[0, torch.arange(16), torch.tensor(steps)] = 5.0
    logits[0, 2, 3] = 6.0  # the second step of the first 3 is its surest
    monkeypatch.setattr(model, "logits", lambda images: logits)
    tokens, probs = model.read(torch.zeros(1, 1, 28, 56))
    assert token_strings(tokens.numpy()) == ["335"] and tokens[0, 3] == END
    assert probs.shape == (1, model.cfg.steps, BLANK + 1)
    assert probs[0, 0, 3] > probs[0, 1, 3] and torch.allclose(probs.sum(-1), torch.ones(1, 5))


def test_the_ctc_loss_falls_when_fitting_a_batch():
    torch.manual_seed(0)
    model = CTCReader(Seq2SeqConfig(**TINY))
    images = torch.rand(8, 1, 28, 56)
    targets = torch.tensor([[1, 2, END, -100, -100]] * 4 + [[7, 7, 7, END, -100]] * 4)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    with torch.no_grad():
        first = float(model.loss(images, targets))
    for _ in range(30):
        loss = model.loss(images, targets)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert torch.isfinite(loss) and loss.item() < 0.5 * first
