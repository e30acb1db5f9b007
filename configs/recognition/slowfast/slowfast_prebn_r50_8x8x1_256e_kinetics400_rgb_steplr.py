_base_ = ['./slowfast_r50_8x8x1_256e_kinetics400_rgb_steplr.py']

data = dict(workers_per_gpu=4)

precise_bn = dict(num_iters=200, interval=5)

# runtime settings
work_dir = './work_dirs/slowfast_prebn_r50_8x8x1_256e_kinetics400_rgb_steplr'
