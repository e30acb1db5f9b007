"""``actionkit.demo.proposal_recall``: the share of annotated people that the score-filtered proposals cover."""
import numpy as np

from actionkit.data.ava_proposals import save_proposals_npz
from actionkit.demo import proposal_recall


def test_proposal_recall_hand_case(tmp_path):
    ann = tmp_path / "val.csv"
    # two people at 0901 (one with two labels: counted once), one at 0902, one on an excluded keyframe
    ann.write_text("v,0901,0.1,0.1,0.3,0.5,1,0\nv,0901,0.1,0.1,0.3,0.5,6,0\nv,0901,0.6,0.2,0.8,0.6,2,1\n"
                   "v,0902,0.1,0.1,0.3,0.5,1,0\nv,0903,0.1,0.1,0.3,0.5,1,0\n")
    exclude = tmp_path / "excluded.csv"
    exclude.write_text("v,0903\n")
    props = {
        "v,0901": np.array([[0.1, 0.1, 0.3, 0.52, 0.95],      # covers person 0 (IoU 0.95)
                            [0.6, 0.2, 0.8, 0.6, 0.5]]),      # covers person 1, but with a low score
        "v,0902": np.array([[0.2, 0.1, 0.4, 0.5, 0.99]]),      # IoU 1/3 with person 0: not found
    }
    npz = tmp_path / "proposals.npz"
    save_proposals_npz(props, npz)
    assert proposal_recall(ann, npz, exclude, score_thr=0.9) == 1 / 3
    assert proposal_recall(ann, npz, exclude, score_thr=0.0) == 2 / 3
    assert proposal_recall(ann, npz, exclude, score_thr=0.0, iou_thr=0.3) == 1.0
    assert proposal_recall(ann, npz, None, score_thr=0.0) == 2 / 4      # 0903 (no proposal) counts when not excluded
