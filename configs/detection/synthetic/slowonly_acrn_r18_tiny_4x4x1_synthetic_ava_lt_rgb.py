# ACRN (actor-centric relation network, MMAction2's slowfast_acrn_...) on the synthetic long-term data: the
# baseline slowonly_r18_tiny_4x4x1_synthetic_ava_lt_rgb.py (same SlowOnly backbone, data and schedule) with an
# ACRNHead between the RoI extractor and the bbox head, and the extractor's temporal max pooling of MMAction2's
# ACRN config (ACRN's context is the temporally pooled feature map). ACRN sees the
# whole feature map next to each actor's RoI feature: the 'relation' classes (cross / watch another person) need
# what the other people do, which a RoI feature alone does not show.
_base_ = ['./slowonly_r18_tiny_4x4x1_synthetic_ava_lt_rgb.py']

model = dict(
    roi_head=dict(
        bbox_roi_extractor=dict(temporal_pool_mode='max'),
        shared_head=dict(type='ACRNHead', in_channels=64 * 2, out_channels=64),
        bbox_head=dict(in_channels=64)))

work_dir = './work_dirs/slowonly_acrn_r18_tiny_4x4x1_synthetic_ava_lt_rgb'
