"""The explorer's page in a real browser: Debian's headless Chromium driven by Selenium (installed
by .ci/run: apt packages chromium and chromium-driver, pip selenium).

The page is used as a person uses it (typing a seed, arrow keys on the psi and direction sliders,
clicking a style-mixing toggle, dragging the latent pad, choosing a layer, capturing); after each
step the pixels the page shows are read back from its <img> and compared with what the server's
/image.png gives for the same controls (tests/test_explore.py proves that equals
`sg2jax.generate`)."""

import io
import json
import os
import shutil
import urllib.parse
import urllib.request

import numpy as np
import pytest
from PIL import Image

CHROMIUM = os.environ.get('SG2JAX_CHROMIUM', '/usr/bin/chromium')
CHROMEDRIVER = os.environ.get('SG2JAX_CHROMEDRIVER', '/usr/bin/chromedriver')

from selenium import webdriver  # noqa: E402  (the dev extra installs selenium)
from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402

from sg2jax.tools.explorer import format_number  # noqa: E402

TIMEOUT = 120  # seconds; a view compiles on first use (a few seconds on a busy 2-core CPU)


def test_the_browser_is_installed():
  """The browser test needs the system Chromium and its driver (.ci/run installs them): their
  absence fails here, in one line, instead of skipping the browser tests."""
  missing = [path for path in (CHROMIUM, CHROMEDRIVER) if not shutil.which(path)]
  assert not missing, f'{missing} missing: apt-get install chromium chromium-driver'


@pytest.fixture(scope='module')
def page(explore_server):
  _, base = explore_server
  options = webdriver.ChromeOptions()
  options.binary_location = CHROMIUM
  for arg in ('--headless=new', '--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage',
              '--window-size=1400,1000'):
    options.add_argument(arg)
  driver = webdriver.Chrome(service=webdriver.ChromeService(executable_path=CHROMEDRIVER),
                            options=options)
  try:
    driver.get(base + '/')
    yield driver, base
  finally:
    driver.quit()


def shown(driver, query: str, base: str) -> np.ndarray:
  """Waits until the page shows the image of `query` (its <img data-query>), then returns the
  pixels it shows (drawn to a canvas at natural size) as uint8 [H, W, 4]."""
  def ready(d):
    img = d.find_element(By.ID, 'image')
    return img.get_attribute('data-query') == query and d.execute_script(
        'return arguments[0].complete && arguments[0].naturalWidth > 0', img)
  WebDriverWait(driver, TIMEOUT).until(ready, f'page never showed {query}')
  data = driver.execute_script('''
      const img = document.getElementById('image');
      const canvas = document.createElement('canvas');
      canvas.width = img.naturalWidth; canvas.height = img.naturalHeight;
      const context = canvas.getContext('2d');
      context.drawImage(img, 0, 0);
      return [canvas.width, canvas.height,
              Array.from(context.getImageData(0, 0, canvas.width, canvas.height).data)];''')
  width, height, pixels = data
  return np.asarray(pixels, np.uint8).reshape(height, width, 4)


def endpoint(base: str, query: str) -> np.ndarray:
  with urllib.request.urlopen(f'{base}/image.png?{query}', timeout=TIMEOUT) as response:
    return np.asarray(Image.open(io.BytesIO(response.read())).convert('RGBA'))


def shows_endpoint_image(driver, base, query):
  pixels = shown(driver, query, base)
  np.testing.assert_array_equal(pixels, endpoint(base, query))
  return pixels


def press(element, key, times):
  element.send_keys(*([key] * times))


def test_page_controls_change_the_image_as_the_endpoint_renders_it(page):
  driver, base = page
  first = shows_endpoint_image(driver, base, 'x=0&y=0&psi=1&noise=const')
  assert driver.find_element(By.ID, 'render-ms').text not in ('', '–')

  seed = driver.find_element(By.ID, 'seed')
  seed.clear()
  seed.send_keys('5', Keys.TAB)  # 'change'
  psi = driver.find_element(By.ID, 'psi')
  press(psi, Keys.ARROW_LEFT, 30)  # 1 -> 0.7 in 30 renders' worth of input events
  moved = shows_endpoint_image(driver, base, 'x=5&y=0&psi=0.7&noise=const')
  assert not np.array_equal(moved, first)

  driver.find_element(By.ID, 'mix-seed').clear()
  driver.find_element(By.ID, 'mix-seed').send_keys('9', Keys.TAB)
  driver.find_element(By.ID, 'mix-0').click()
  driver.find_element(By.ID, 'mix-1').click()
  mixed = shows_endpoint_image(driver, base, 'x=5&y=0&psi=0.7&noise=const&mix_seed=9&mix=0%2C1')
  assert not np.array_equal(mixed, moved)

  press(driver.find_element(By.ID, 'dir-0'), Keys.ARROW_RIGHT, 25)  # SeFa component 0 at 2.5
  edited = shows_endpoint_image(
      driver, base, 'x=5&y=0&psi=0.7&noise=const&mix_seed=9&mix=0%2C1&direction=sefa%3A0'
                    '&strength=2.5&direction_layers=0-7')
  assert not np.array_equal(edited, mixed)

  # GANSpace (the server's N, 64 here: computed and cached on first use), component 1 on rows 2-4.
  Select(driver.find_element(By.ID, 'dir-method')).select_by_value('ganspace')
  for element, value in (('dir-from', '2'), ('dir-to', '4')):
    driver.find_element(By.ID, element).clear()
    driver.find_element(By.ID, element).send_keys(value, Keys.TAB)
  press(driver.find_element(By.ID, 'dir-1'), Keys.ARROW_LEFT, 15)
  ganspace = shows_endpoint_image(
      driver, base, 'x=5&y=0&psi=0.7&noise=const&mix_seed=9&mix=0%2C1&direction=ganspace%3A1'
                    '&strength=-1.5&direction_layers=2-4')
  assert not np.array_equal(ganspace, mixed)
  assert driver.find_element(By.ID, 'samples').text == '64'


def test_dragging_the_latent_ends_on_the_full_image_of_the_new_position(page):
  driver, base = page
  driver.find_element(By.ID, 'reset').click()
  driver.find_element(By.ID, 'dir-reset').click()
  for layer in (0, 1):
    driver.find_element(By.ID, f'mix-{layer}').click()
  pad = driver.find_element(By.ID, 'pad')
  ActionChains(driver).click_and_hold(pad).move_by_offset(30, 0).move_by_offset(20, 10) \
      .release().perform()
  x, y = driver.execute_script('return [state.x, state.y]')
  assert (x, y) != (0, 0)
  # Numbers as the page writes them (JavaScript's shortest form: 0.5, 3).
  query = urllib.parse.urlencode(dict(x=format_number(x), y=format_number(y), psi='0.7',
                                      noise='const'))
  shows_endpoint_image(driver, base, query)

  # Animation walks along x at `speed` seeds per second; stopping it draws the full image there.
  driver.find_element(By.ID, 'anim').click()
  WebDriverWait(driver, TIMEOUT).until(
      lambda d: d.execute_script('return state.x') > x + 0.2, 'the animation did not move')
  driver.find_element(By.ID, 'anim').click()
  x = driver.execute_script('return state.x')
  shows_endpoint_image(driver, base, urllib.parse.urlencode(
      dict(x=format_number(x), y=format_number(y), psi='0.7', noise='const')))


def test_layer_view_capture_and_a_bad_request(page):
  driver, base = page
  driver.find_element(By.ID, 'reset').click()
  Select(driver.find_element(By.ID, 'layer')).select_by_value('b16.conv0')
  pixels = shown(driver, 'x=0&y=0&psi=0.7&noise=const&layer=b16.conv0&mode=grid&normalize=1',
                 base)
  assert pixels.shape[:2] == (96, 96)  # 32 channels of 16x16
  assert 'all channels: mean' in driver.find_element(By.ID, 'stats').text

  Select(driver.find_element(By.ID, 'layer')).select_by_value('')
  driver.find_element(By.ID, 'capture').click()
  WebDriverWait(driver, TIMEOUT).until(
      lambda d: d.find_element(By.ID, 'command').text.strip(), 'no command after capture')
  with urllib.request.urlopen(f'{base}/api/command?x=0&y=0&psi=0.7&noise=const') as response:
    expected = json.loads(response.read())
  assert expected['command'].endswith('--seeds 0 --trunc 0.7 --noise-mode const --outdir out')
  assert driver.find_element(By.ID, 'command').text == (
      f'{expected["command"]}\n# writes out/{expected["writes"]}')
  assert driver.find_element(By.ID, 'download').get_attribute('download') == 'seed0000.png'

  status, text = driver.execute_async_script('''
      const done = arguments[arguments.length - 1];
      fetch('/image.png?psi=9').then(async (r) => done([r.status, await r.text()]));''')
  assert (status, text) == (400, 'error: psi=9 is outside [-1, 2]\n')


@pytest.mark.slow  # a few more renders; SG2JAX_EXPLORE_SCREENSHOTS=docs/images remakes the README's
def test_readme_screenshots(page, tmp_path):
  """The README's screenshots, explore.png (seed 5, psi 0.7, rows 0-1 from seed 9, SeFa component
  0 at 2.5 on rows 0-5) and explore_layers.png (the same, showing b16.conv0's channels): made in
  SG2JAX_EXPLORE_SCREENSHOTS (docs/images for the README) or a temporary folder."""
  screenshots = os.environ.get('SG2JAX_EXPLORE_SCREENSHOTS') or str(tmp_path)
  driver, base = page
  driver.find_element(By.ID, 'reset').click()
  for element, value in (('seed', '5'), ('mix-seed', '9'), ('dir-to', '5')):
    driver.find_element(By.ID, element).clear()
    driver.find_element(By.ID, element).send_keys(value, Keys.TAB)
  driver.execute_script('''
      const psi = document.getElementById('psi'); psi.value = '0.7';
      psi.dispatchEvent(new Event('input'));
      for (const id of ['mix-0', 'mix-1']) {
        const box = document.getElementById(id); if (!box.checked) box.click(); }
      const slider = document.getElementById('dir-0'); slider.value = '2.5';
      slider.dispatchEvent(new Event('input'));''')
  query = ('x=5&y=0&psi=0.7&noise=const&mix_seed=9&mix=0%2C1&direction=sefa%3A0&strength=2.5'
           '&direction_layers=0-5')
  shown(driver, query, base)
  driver.find_element(By.ID, 'capture').click()
  WebDriverWait(driver, TIMEOUT).until(lambda d: d.find_element(By.ID, 'command').text.strip())
  os.makedirs(screenshots, exist_ok=True)
  for name, layer in (('explore.png', ''), ('explore_layers.png', 'b16.conv0')):
    Select(driver.find_element(By.ID, 'layer')).select_by_value(layer)
    shown(driver, query + (f'&layer={layer}&mode=grid&normalize=1' if layer else ''), base)
    path = os.path.join(screenshots, name)
    driver.find_element(By.TAG_NAME, 'main').screenshot(path)
    image = Image.open(path).convert('RGB')
    image = image.resize((image.width * 2 // 3, image.height * 2 // 3), Image.LANCZOS)
    image.quantize(colors=64).save(path, optimize=True)  # small: the page has few colours
    assert min(Image.open(path).size) > 100, path  # the page, not an empty element
