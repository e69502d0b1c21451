#!/bin/bash
# Multi-node DDP under SLURM: one task per GPU; Lightning reads the SLURM environment.
#   sbatch configs/distributed/slurm.sh configs/things_eeg2/atm.yaml --data.root prepared/things_eeg2
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=4
#SBATCH --gpus-per-node=4
#SBATCH --cpus-per-task=8
#SBATCH --time=12:00:00
config=$1; shift
srun neurodecode fit -c "$config" -c configs/distributed/ddp.yaml \
    --trainer.num_nodes "$SLURM_JOB_NUM_NODES" --trainer.devices "$SLURM_NTASKS_PER_NODE" "$@"
