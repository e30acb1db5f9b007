# Baseline of the long-term / relation proof (benchmarks/lfb_acrn_proof.py) and of `actionkit lfb` on synthetic
# data: the small SlowOnly detector of the demo, inherited from slowonly_r18_tiny_4x4x1_synthetic_ava_rgb.py
# (ResNet3dSlowOnly depth 18, 8 base channels -> 64 output channels, output stride 8, 4 frames at stride 4, no crop,
# no flip), on
# the synthetic AVA data with the extra class groups, written by
#   actionkit make-synthetic ava --out data/synthetic_ava_lt --num-train 16 --num-val 6 --num-keyframes 40 \
#       --actors 3 4 --no-videos --extra relation event flash
# Classes: 1-5 motion, 6-7 attribute, 8-9 relation (cross / watch another person), 10 event (a scene-wide flash
# 5-25 s before or after the keyframe: long-term), 11 lit by a flash (the flash itself, short-term).
# 10 epochs: the feature bank stores this detector's RoI features, so what the baseline learns to see (the
# short-term flash class among them) is what an LFB model can use.
# Frames are resized to a short side of 96 (not 120) so that the baseline, two banks, three LFB models and ACRN
# train on a CPU in about 20 minutes. timestamp_end only clips frame indices (keyframes keep a 3 s margin), so
# videos with fewer keyframes work unchanged.
# What differs from the demo config: the data (paths, 12 classes, 40 keyframes), the frame size, the schedule
# (10 epochs, as the proof's baseline) and the intervals. Pipelines are lists and the dataset dicts were filled
# from variables in the base file, so they are restated here.
_base_ = ['./slowonly_r18_tiny_4x4x1_synthetic_ava_rgb.py']

model = dict(roi_head=dict(bbox_head=dict(num_classes=12)))

dataset_type = 'AVADataset'
data_root = 'data/synthetic_ava_lt/rawframes'
anno_root = 'data/synthetic_ava_lt/annotations'
ann_file_train = f'{anno_root}/train.csv'
ann_file_val = f'{anno_root}/val.csv'
exclude_file_train = f'{anno_root}/train_excluded_timestamps.csv'
exclude_file_val = f'{anno_root}/val_excluded_timestamps.csv'
label_file = f'{anno_root}/action_list.pbtxt'
proposal_file_train = f'{anno_root}/proposals_train.npz'
proposal_file_val = f'{anno_root}/proposals_val.npz'
# the synthetic videos: 15 fps, timeline starting at 900 s, keyframes 903..942 s (40 keyframes)
dataset_args = dict(fps=15, timestamp_start=900, timestamp_end=945, num_classes=12)

img_norm_cfg = dict(
    mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375], to_bgr=False)
train_pipeline = [
    dict(type='SampleAVAFrames', clip_len=4, frame_interval=4),
    dict(type='RawFrameDecode'),
    dict(type='Resize', scale=(-1, 96)),
    dict(type='Flip', flip_ratio=0.0),  # flipping would swap 'walk left' and 'walk right'
    dict(type='Normalize', **img_norm_cfg),
    dict(type='FormatShape', input_format='NCTHW', collapse=True),
    dict(type='Rename', mapping=dict(imgs='img')),
    dict(type='ToTensor', keys=['img', 'proposals', 'gt_bboxes', 'gt_labels']),
    dict(
        type='ToDataContainer',
        fields=[
            dict(key=['proposals', 'gt_bboxes', 'gt_labels'], stack=False)
        ]),
    dict(
        type='Collect',
        keys=['img', 'proposals', 'gt_bboxes', 'gt_labels'],
        meta_keys=['scores', 'entity_ids', 'img_key'])
]
val_pipeline = [
    dict(
        type='SampleAVAFrames', clip_len=4, frame_interval=4, test_mode=True),
    dict(type='RawFrameDecode'),
    dict(type='Resize', scale=(-1, 96)),
    dict(type='Normalize', **img_norm_cfg),
    dict(type='FormatShape', input_format='NCTHW', collapse=True),
    dict(type='Rename', mapping=dict(imgs='img')),
    dict(type='ToTensor', keys=['img', 'proposals']),
    dict(type='ToDataContainer', fields=[dict(key='proposals', stack=False)]),
    dict(
        type='Collect',
        keys=['img', 'proposals'],
        meta_keys=['scores', 'img_shape', 'img_key'],
        nested=True)
]
data = dict(
    videos_per_gpu=8,
    workers_per_gpu=1,
    val_dataloader=dict(videos_per_gpu=4),
    test_dataloader=dict(videos_per_gpu=4),
    train=dict(
        type=dataset_type,
        ann_file=ann_file_train,
        exclude_file=exclude_file_train,
        pipeline=train_pipeline,
        label_file=label_file,
        proposal_file=proposal_file_train,
        person_det_score_thr=0.9,
        data_prefix=data_root,
        **dataset_args),
    val=dict(
        type=dataset_type,
        ann_file=ann_file_val,
        exclude_file=exclude_file_val,
        pipeline=val_pipeline,
        label_file=label_file,
        proposal_file=proposal_file_val,
        person_det_score_thr=0.9,
        data_prefix=data_root,
        **dataset_args))
data['test'] = data['val']

total_epochs = 10
checkpoint_config = dict(interval=2)
evaluation = dict(interval=10, save_best='mAP@0.5IOU')
log_config = dict(interval=10, hooks=[dict(type='TextLoggerHook')])
work_dir = './work_dirs/slowonly_r18_tiny_4x4x1_synthetic_ava_lt_rgb'
