_base_ = ['./slowfast_r50_4x16x1_256e_kinetics400_rgb.py']

data = dict(workers_per_gpu=4)

# PreciseBN: recompute BN statistics from 200 train batches after every epoch
precise_bn = dict(num_iters=200, interval=1)

# runtime settings
work_dir = './work_dirs/slowfast_prebn_r50_4x16x1_256e_kinetics400_rgb'
