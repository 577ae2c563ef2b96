"""Drives the real, unchanged Instaloader 4.16 against the simulator (see simulator/tests/instaloader.rs).

The only patch: requests.Session.request rewrites Instagram's base URLs to the simulator, so that
Instaloader's cookie jar sees plain http (which is what shows the simulator's cookies work there).

    driver.py main SPEC.json   every operation, anonymous and logged in; prints one RESULT line
    driver.py race SPEC.json   one of two processes crawling one account at once
"""
import calendar
import hashlib
import json
import os
import shutil
import sys
import time

import instaloader
import to_simulator
from instaloader import (Hashtag, Instaloader, Post, Profile, TopSearchResults)
from instaloader.exceptions import (ConnectionException, LoginException, LoginRequiredException,
                                    PrivateProfileNotFollowedException, ProfileNotExistsException,
                                    TwoFactorAuthRequiredException)

MODE, SPEC = sys.argv[1], json.load(open(sys.argv[2]))
BASE = SPEC["base"].rstrip("/")

to_simulator.redirect(BASE)
assert instaloader.__version__ == "4.16", instaloader.__version__

RESULT = {}


def record(name, value):
    RESULT[name] = value
    count = len(value) if isinstance(value, (list, dict)) else value
    print(f"{name}: {count}", flush=True)


def loader(**kwargs):
    return Instaloader(sleep=False, quiet=True, download_pictures=False, download_videos=False,
                       download_comments=False, save_metadata=False, **kwargs)


def post_facts(post):
    return {"shortcode": post.shortcode, "id": post.mediaid, "likes": post.likes,
            "typename": post.typename, "owner": post.owner_username, "caption": post.caption,
            "taken_at": calendar.timegm(post.date_utc.timetuple())}


def raised(fn):
    try:
        fn()
    except Exception as err:  # the test checks which exception it was
        return type(err).__name__
    return None


def comments_of(post):
    out = []
    for c in post.get_comments():
        out.append({"id": int(c.id), "owner": c.owner.username, "text": c.text,
                    "answers": [a.id for a in c.answers]})
    return out


def main():
    s = SPEC
    # Anonymous.
    anon = loader()
    p = Profile.from_username(anon.context, s["posts_user"])
    record("anon_profile", {"id": p.userid, "username": p.username, "full_name": p.full_name,
                            "biography": p.biography, "is_private": p.is_private,
                            "followers": p.followers, "followees": p.followees,
                            "mediacount": p.mediacount, "pic": p.profile_pic_url})
    posts = list(p.get_posts())
    record("anon_posts", [dict(post_facts(x), comments=x.comments) for x in posts])
    one = Post.from_shortcode(anon.context, s["few_comments_post"])
    record("anon_post", dict(post_facts(one), comments=one.comments, is_video=one.is_video,
                             owner_id=one.owner_id))
    record("anon_reels", [x.shortcode for x in p.get_reels()])
    record("anon_tagged", [x.shortcode for x in Profile.from_username(
        anon.context, s["tagged_user"]).get_tagged_posts()])
    record("anon_likes", raised(lambda: list(one.get_likes())))
    record("anon_from_id", Profile.from_id(anon.context, s["follow_user_id"]).username)
    tag = Hashtag.from_name(anon.context, s["tag"])
    record("anon_hashtag_resumable", [x.shortcode for x in tag.get_posts_resumable()])
    search = TopSearchResults(anon.context, s["search"])
    record("anon_topsearch_profiles", [x.username for x in search.get_profiles()])
    record("anon_topsearch_hashtags", list(TopSearchResults(anon.context, s["tag"]).get_hashtag_strings()))
    record("anon_topsearch_places", [{"id": loc.id, "name": loc.name, "slug": loc.slug} for loc in
                                     TopSearchResults(anon.context, s["place"]).get_locations()])
    record("anon_private_posts", raised(lambda: list(Profile.from_username(
        anon.context, s["private_user"]).get_posts())))
    record("anon_unknown_profile", raised(lambda: Profile.from_username(anon.context, "no_such_user_x")))
    record("anon_test_login", anon.test_login())
    anon_errors = list(anon.context.error_log)

    # Checkpoint and two-factor logins.
    checkpoint = loader()
    try:
        checkpoint.login(s["checkpoint_account"], s["password"])
        record("checkpoint_login", "logged in")
    except LoginException as err:
        record("checkpoint_login", str(err))
    twofa = loader()
    try:
        twofa.login(s["two_factor_account"], s["password"])
        record("two_factor_login", "no two-factor step")
    except TwoFactorAuthRequiredException:
        record("two_factor_wrong_code", raised(lambda: twofa.two_factor_login("000000")))
        twofa.two_factor_login(s["two_factor_code"])
        record("two_factor_login", twofa.test_login())

    # Logged in.
    L = loader()
    L.login(s["plain_account"], s["password"])
    record("test_login", L.test_login())
    p = Profile.from_username(L.context, s["posts_user"])
    record("profile", {"id": p.userid, "username": p.username, "full_name": p.full_name,
                       "biography": p.biography, "is_private": p.is_private,
                       "is_verified": p.is_verified, "followers": p.followers,
                       "followees": p.followees, "mediacount": p.mediacount,
                       "pic_hd": p.profile_pic_url, "followed_by_viewer": p.followed_by_viewer})
    record("posts", [post_facts(x) for x in p.get_posts()])
    record("reels", [x.shortcode for x in p.get_reels()])
    record("igtv", [x.shortcode for x in p.get_igtv_posts()])
    f = Profile.from_username(L.context, s["follow_user"])
    record("followers", [x.username for x in f.get_followers()])
    record("followees", [x.username for x in f.get_followees()])
    t = Profile.from_username(L.context, s["tagged_user"])
    record("tagged", [x.shortcode for x in t.get_tagged_posts()])
    few = Post.from_shortcode(L.context, s["few_comments_post"])
    record("few_comments_total", few.comments)
    record("few_comments", comments_of(few))
    many = Post.from_shortcode(L.context, s["many_comments_post"])
    record("many_comments_total", many.comments)
    record("many_comments", comments_of(many))
    record("likes", [x.username for x in many.get_likes()])
    # A logged-in image's URL comes from the app's media info.
    record("image_url", Post.from_shortcode(L.context, s["image_post"]).url)
    located = Post.from_shortcode(L.context, s["located_post"])
    loc = located.location
    record("post_location", {"id": loc.id, "name": loc.name, "slug": loc.slug, "lat": loc.lat, "lng": loc.lng})
    record("location_posts", [x.shortcode for x in L.get_location_posts(str(s["location_id"]))])
    tag = Hashtag.from_name(L.context, s["tag"])
    record("hashtag_mediacount", tag.mediacount)
    record("hashtag_posts", [x.shortcode for x in tag.get_posts()])
    record("hashtag_top", [x.shortcode for x in tag.get_top_posts()])
    record("hashtag_resumable", [x.shortcode for x in tag.get_posts_resumable()])
    stories = {}
    for story in L.get_stories():
        stories[str(story.owner_id)] = [item.mediaid for item in story.get_items()]
    record("stories", stories)
    h = Profile.from_username(L.context, s["highlight_user"])
    highlights = {}
    for hl in L.get_highlights(h):
        highlights[str(hl.unique_id)] = {"title": hl.title, "items": [i.mediaid for i in hl.get_items()]}
    record("highlights", highlights)
    record("from_id", Profile.from_id(L.context, s["follow_user_id"]).username)
    record("private_posts", raised(lambda: Profile.from_username(L.context, s["private_user"]).get_posts()))
    download_errors = downloads(s)
    record("errors", anon_errors + list(L.context.error_log) + list(twofa.context.error_log)
           + download_errors)


def downloads(s):
    """Instaloader's own download code against the simulator's CDN: posts of every kind (logged in
    and anonymous), a profile picture, story items and a highlight cover. Records every file it
    wrote with its size and SHA-256; returns the loaders' errors."""
    root = os.path.join(os.getcwd(), "downloads")
    shutil.rmtree(root, ignore_errors=True)

    def downloader():
        return Instaloader(sleep=False, quiet=True, download_comments=False, save_metadata=False,
                           post_metadata_txt_pattern="", storyitem_metadata_txt_pattern="",
                           dirname_pattern=os.path.join(root, "{target}"))

    D = downloader()
    D.login(s["plain_account"], s["password"])
    for code in s["download_posts"]:
        D.download_post(Post.from_shortcode(D.context, code), target="post_" + code)
    D.download_profilepic(Profile.from_username(D.context, s["posts_user"]))
    for story in D.get_stories(userids=[s["story_user_id"]]):
        for item in story.get_items():
            D.download_storyitem(item, "story")
    for hl in D.get_highlights(Profile.from_username(D.context, s["highlight_user"])):
        D.download_highlight_cover(hl, "cover")
        break
    A = downloader()
    A.download_post(Post.from_shortcode(A.context, s["image_post"]), target="anonymous")
    files = []
    for dirpath, _, names in sorted(os.walk(root)):
        for name in sorted(names):
            if name.endswith((".jpg", ".mp4")):
                path = os.path.join(dirpath, name)
                with open(path, "rb") as f:
                    data = f.read()
                files.append({"file": os.path.relpath(path, root), "size": len(data),
                              "sha256": hashlib.sha256(data).hexdigest()})
    record("downloads", files)
    return list(D.context.error_log) + list(A.context.error_log)


def race():
    # Two processes, one account: each sends its own share of one doc_id query. Neither's
    # RateController can see the other's requests, so together they pass the server's window.
    # A 429 would make Instaloader sleep about 11 minutes before its retry (handle_429); with
    # max_connection_attempts=1 there is no retry, so no such sleep: get_json raises a
    # ConnectionException at once, which is caught and counted here.
    L = loader(max_connection_attempts=1)
    L.login(SPEC["racer_account"], SPEC["password"])
    # Start together: each process announces it has logged in and waits for the other.
    barrier = SPEC["barrier_dir"]
    os.makedirs(barrier, exist_ok=True)
    open(os.path.join(barrier, str(os.getpid())), "w").close()
    deadline = time.monotonic() + 60
    while len(os.listdir(barrier)) < SPEC["processes"]:
        if time.monotonic() > deadline:
            raise SystemExit("the other racer never logged in")
        time.sleep(0.01)
    ok = refused = 0
    codes = SPEC["race_shortcodes"]
    for k in range(SPEC["race_requests"]):
        try:
            Post.from_shortcode(L.context, codes[k % len(codes)])
            ok += 1
        except ConnectionException as err:
            if "429" not in str(err):
                raise
            refused += 1
    record("race_ok", ok)
    record("race_429", refused)


{"main": main, "race": race}[MODE]()
print("RESULT " + json.dumps(RESULT), flush=True)
