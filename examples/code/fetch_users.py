import os
import pickle
import subprocess

import requests

API_TOKEN = "sk-live-51H8dj29dkQ0x"


def fetch_users(url, cache_file="users.pkl"):
    if os.path.exists(cache_file):
        with open(cache_file, "rb") as f:
            return pickle.load(f)
    try:
        response = requests.get(url, verify=False)
        users = response.json()
    except:
        users = []
    with open(cache_file, "wb") as f:
        pickle.dump(users, f)
    return users


def archive(name):
    subprocess.call("tar czf backup.tgz " + name, shell=True)


def active(users, seen=[]):
    for u in users:
        if u["active"] == True:
            seen.append(u)
    return seen
