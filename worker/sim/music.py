"""``music-clean``: active label cleaning on real crowd answers (Rodrigues et al. 2013).

``../shared/data/music.npz``: 700 songs, 10 genres, 2,945 answers from 44 Mechanical Turk
workers (1-7 per song, 4.2 on average), 124 audio features, and the true genre. The protocol is
the CIFAR-10H one (``cleaning.py``) with real answers in place of simulated votes:

- items: all 700 songs; features standardised with their own (train) mean and std;
- noisy start: one of the song's real answers, drawn uniformly with ``default_rng([seed, 2])``
  (``draw_labels`` on the answer distribution, T = 1); about 44 % of them are wrong;
- relabels: another of the song's real answers, drawn uniformly WITH replacement
  (``CrowdOracle`` on the song's answer counts, keyed by seed, song and draw number), until the
  song's votes have a strict majority; a song with one answer repeats it;
- metric: fraction of the 700 songs whose strict majority is the TRUE genre (ties wrong). Only
  songs with the truth among their answers can be fixed, and a relabel can turn a right song
  wrong: the strict majority of ALL of a song's answers is the truth for 61 % of the songs, and
  the best selectors' curves peak near 0.63;
- budget: 1,000 relabels, about 3 eta N as in the CIFAR-10H protocol (eta ~ 0.45); cleaning
  costs ~1.5 relabels a song (the first draw often agrees), so about 650 of the 700 songs get
  cleaned and every curve ends near the same accuracy: the AUC measures how early it rises;
- oracle: the reference's simulation oracle fed the song's empirical answer distribution, the
  distribution the relabels are drawn from (as CIFAR-10H's oracle gets the full vote
  distribution): it knows which songs the crowd would overturn, not the truth, so the
  a selector can sometimes beat it; it is a strong reference, not a bound;
- selector model: the project's ``mlp`` (256-128, dropout 0.5), Adam 1e-3, batch 64, 50 epochs:
  long enough to memorise its labels (it fits 94-96 % of the noisy start); fine-tuned every 100
  relabels for 12 epochs (``for_finetuning``). ``ce_minus_entropy`` / ``joint`` score the songs
  the model trained on; ``ce_minus_entropy_oof`` / ``joint_oof`` score held-out posteriors of
  K = 5 fold models (``heldout.py``), fine-tuned from the last refresh's fold models.
"""

from __future__ import annotations

from worker.sim.cleaning import SELECTORS, CleaningProtocol
from worker.sim.protocol import DataSource

MUSIC = DataSource(
    "../shared/data/music.npz",
    images="X_train",
    labels="y_train",
    counts="answers",
    answers=True,
    standardise=True,
)

_MLP = {
    "name": "mlp",
    "input_shape": [124],
    "hparams": {"epochs": 50, "batch_size": 64, "lr": 1e-3},
}

MUSIC_PROTOCOLS: dict[str, CleaningProtocol] = {
    "music-clean": CleaningProtocol(
        name="music-clean",
        data=MUSIC,
        temperature=1.0,
        size=700,
        ambiguity=1.0,  # every song is an item anyway
        budget=1000,
        truth="labels",
        refresh_every=100,
        model=_MLP,
        folds=5,
        selectors=SELECTORS,
        seeds=(0, 1, 2),
    ),
}
