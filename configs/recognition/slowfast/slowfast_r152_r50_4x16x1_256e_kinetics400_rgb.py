_base_ = ['./slowfast_r50_4x16x1_256e_kinetics400_rgb.py']

model = dict(
    backbone=dict(slow_pathway=dict(depth=152)),
    test_cfg=dict(max_testing_views=8))

# runtime settings
work_dir = './work_dirs/slowfast_r152_r50_4x16x1_256e_kinetics400_rgb'
