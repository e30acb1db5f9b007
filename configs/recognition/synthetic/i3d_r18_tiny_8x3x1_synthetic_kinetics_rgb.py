# A tiny I3D (ResNet3d-18 at 1/8 width, 3x1x1 inflation) for the synthetic Kinetics-format data written by
# `actionkit make-synthetic kinetics --out data/synthetic_kinetics`: 4 classes = the direction in which a red
# disc moves (right, down, left, up) over a drifting textured background with moving distractors; a single
# frame carries no information about the label, so the model has to learn motion.
# Same schema as i3d_r50_32x2x1_100e_kinetics400_rgb (RawframeDataset, SampleFrames, NCTHW), sized so that it
# trains on a 2-core CPU in a couple of minutes: 8 frames 3 apart (the disc moves 2-3 px between sampled frames
# at 32x32), 32x32 inputs.  No Flip: a horizontal flip swaps 'move_left' and 'move_right'.
model = dict(
    type='Recognizer3D',
    backbone=dict(
        type='ResNet3d',
        depth=18,
        base_channels=8,
        pretrained=None,
        pretrained2d=False,
        conv1_kernel=(3, 7, 7),
        conv1_stride_t=1,
        pool1_stride_t=1,
        conv_cfg=dict(type='Conv3d'),
        norm_eval=False,
        inflate=((1, 1), (1, 1), (1, 1), (1, 1)),
        zero_init_residual=False),
    cls_head=dict(
        type='I3DHead',
        num_classes=4,
        in_channels=64,
        spatial_type='avg',
        dropout_ratio=0.0,  # see the optimizer below
        init_std=0.01),
    train_cfg=None,
    test_cfg=dict(average_clips='prob'))

# dataset settings: the lists hold 'train/vid_00000 48 3', relative to the rawframes folder
dataset_type = 'RawframeDataset'
data_root = 'data/synthetic_kinetics/rawframes'
data_root_val = 'data/synthetic_kinetics/rawframes'
ann_file_train = 'data/synthetic_kinetics/kinetics_train_list_rawframes.txt'
ann_file_val = 'data/synthetic_kinetics/kinetics_val_list_rawframes.txt'
ann_file_test = 'data/synthetic_kinetics/kinetics_val_list_rawframes.txt'
img_norm_cfg = dict(
    mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375], to_bgr=False)
train_pipeline = [
    dict(type='SampleFrames', clip_len=8, frame_interval=3, num_clips=1),
    dict(type='RawFrameDecode'),
    dict(type='Resize', scale=(32, 32), keep_ratio=False),
    dict(type='Flip', flip_ratio=0.0),  # flipping would swap 'move_left' and 'move_right'
    dict(type='Normalize', **img_norm_cfg),
    dict(type='FormatShape', input_format='NCTHW'),
    dict(type='Collect', keys=['imgs', 'label'], meta_keys=[]),
    dict(type='ToTensor', keys=['imgs', 'label'])
]
val_pipeline = [
    dict(
        type='SampleFrames',
        clip_len=8,
        frame_interval=3,
        num_clips=1,
        test_mode=True),
    dict(type='RawFrameDecode'),
    dict(type='Resize', scale=(32, 32), keep_ratio=False),
    dict(type='Normalize', **img_norm_cfg),
    dict(type='FormatShape', input_format='NCTHW'),
    dict(type='Collect', keys=['imgs', 'label'], meta_keys=[]),
    dict(type='ToTensor', keys=['imgs'])
]
test_pipeline = [
    dict(
        type='SampleFrames',
        clip_len=8,
        frame_interval=3,
        num_clips=3,
        test_mode=True),
    dict(type='RawFrameDecode'),
    dict(type='Resize', scale=(32, 32), keep_ratio=False),
    dict(type='Normalize', **img_norm_cfg),
    dict(type='FormatShape', input_format='NCTHW'),
    dict(type='Collect', keys=['imgs', 'label'], meta_keys=[]),
    dict(type='ToTensor', keys=['imgs'])
]
data = dict(
    videos_per_gpu=16,
    workers_per_gpu=0,
    val_dataloader=dict(videos_per_gpu=8),
    test_dataloader=dict(videos_per_gpu=4),
    train=dict(
        type=dataset_type,
        ann_file=ann_file_train,
        data_prefix=data_root,
        pipeline=train_pipeline),
    val=dict(
        type=dataset_type,
        ann_file=ann_file_val,
        data_prefix=data_root_val,
        pipeline=val_pipeline),
    test=dict(
        type=dataset_type,
        ann_file=ann_file_test,
        data_prefix=data_root_val,
        pipeline=test_pipeline))

# optimizer: 16 videos per batch on one process.  AdamW, no dropout in the head: trained from scratch with
# MMAction2's SGD (lr 0.01, momentum 0.9) and 8 videos per batch, each step moved the classifier by ~10-20 % of its
# norm but the convolutions by 0.01-0.8 % of theirs, so the head chased every batch (loss above ln 4) while the
# motion features stayed put, and motion learning began after 1 to more than 10 epochs depending on the seed.
# AdamW's per-parameter steps move every layer at the same pace; dropout before fc_cls (0.2) delayed it further.
optimizer = dict(type='AdamW', lr=0.002, weight_decay=0.0001)
optimizer_config = dict(grad_clip=dict(max_norm=40, norm_type=2))
lr_config = dict(
    policy='CosineAnnealing',
    by_epoch=False,
    min_lr=0,
    warmup='linear',
    warmup_by_epoch=True,
    warmup_iters=1,
    warmup_ratio=0.1)
total_epochs = 20

# runtime settings
checkpoint_config = dict(interval=5)
evaluation = dict(
    interval=5, metrics=['top_k_accuracy', 'mean_class_accuracy'], topk=(1, ))
log_config = dict(interval=10, hooks=[dict(type='TextLoggerHook')])
dist_params = dict(backend='gloo')
log_level = 'INFO'
load_from = None
resume_from = None
workflow = [('train', 1)]
opencv_num_threads = 0
work_dir = './work_dirs/i3d_r18_tiny_8x3x1_synthetic_kinetics_rgb/'
